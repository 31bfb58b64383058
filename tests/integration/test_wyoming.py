"""``voxbox wyoming`` against the ``wyoming`` package's own client, over TCP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import free_port, make_settings

pytest.importorskip("wyoming")

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeVoice,
)

from voxbox.audio.decode import decode
from voxbox.realtime.agreement import same_words
from voxbox.text import wer

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
SENTENCE = "The quick brown fox jumps over the lazy dog."


class WyomingServer:
    """``voxbox.wyoming.cli.run`` on its own event loop in a thread."""

    def __init__(self, settings: Any) -> None:
        self.port = free_port()
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.task: Any = None

    def start(self) -> WyomingServer:
        from voxbox.wyoming.cli import run

        self.thread.start()

        async def go() -> None:
            ready = asyncio.Event()
            self.task = asyncio.ensure_future(run(self.settings, f"tcp://127.0.0.1:{self.port}", ready=ready))
            await ready.wait()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(timeout=180)
        return self

    def stop(self) -> None:
        async def halt() -> None:
            self.task.cancel()
            with contextlib.suppress(BaseException):  # cancelled
                await self.task

        asyncio.run_coroutine_threadsafe(halt(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = WyomingServer(make_settings(tmp_path_factory.mktemp("wy"), max_speech_chars=120)).start()
    yield srv
    srv.stop()


async def _exchange(port: int, events: list[Event], until: str) -> list[Event]:
    """Send ``events``; read until an event of type ``until`` (or an error)."""
    got: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for ev in events:
            await client.write_event(ev)
        while True:
            ev = await asyncio.wait_for(client.read_event(), 120)
            assert ev is not None, "the server closed the connection"
            got.append(ev)
            if ev.type in (until, "error"):
                return got


def _audio_events(samples: np.ndarray, rate: int, channels: int = 1, chunk_s: float = 0.1) -> list[Event]:
    x = np.repeat(samples[:, None], channels, axis=1).reshape(-1) if channels > 1 else samples
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    step = int(rate * chunk_s) * 2 * channels
    return ([AudioStart(rate=rate, width=2, channels=channels).event()]
            + [AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i : i + step]).event()
               for i in range(0, len(pcm), step)]
            + [AudioStop().event()])


def _pcm(events: list[Event]) -> tuple[np.ndarray, int]:
    start = next(AudioStart.from_event(e) for e in events if AudioStart.is_type(e.type))
    data = b"".join(AudioChunk.from_event(e).audio for e in events if AudioChunk.is_type(e.type))
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, start.rate


def test_describe_lists_models_and_voices(server):
    events = asyncio.run(_exchange(server.port, [Describe().event()], "info"))
    info = Info.from_event(events[-1])
    assert info.asr and info.tts
    asr_names = [m.name for m in info.asr[0].models]
    assert "whisper-1" in asr_names and info.asr[0].supports_transcript_streaming
    whisper = next(m for m in info.asr[0].models if m.name == "whisper-1")
    assert "en" in whisper.languages  # loaded at start: the engine's own languages
    voices = {v.name: v for v in info.tts[0].voices}
    assert "heart" in voices and "en" in voices["heart"].languages  # the default speech model (hibari)
    assert "tts-1-hd/joe" in voices  # another model's voice, by MODEL/VOICE
    assert info.tts[0].supports_synthesize_streaming


def test_transcribe_recording_with_transcript_chunks(server, moonshine_assets):
    """44.1 kHz stereo in; the transcript matches the text; chunks stream before the final."""
    from voxbox.audio.resample import resample

    a = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)
    audio = resample(a.samples, 16000, 44100)
    events = asyncio.run(_exchange(server.port, [Transcribe(name="whisper-1", language="en").event()]
                                   + _audio_events(audio, 44100, channels=2), "transcript-stop"))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and "transcript-chunk" in types
    assert types[-2:] == ["transcript", "transcript-stop"]
    text = Transcript.from_event(events[-2]).text
    assert wer(BECKETT, text) <= 0.05, text
    chunks = "".join(e.data["text"] for e in events if e.type == "transcript-chunk")
    assert chunks.strip() == text


def test_silence_gives_an_empty_transcript(server):
    events = asyncio.run(_exchange(server.port, [Transcribe().event()]
                                   + _audio_events(np.zeros(16000 * 3, np.float32), 16000), "transcript"))
    assert Transcript.from_event(events[-1]).text == ""


def test_synthesize_and_transcribe_back(server):
    from voxbox.audio.resample import resample

    events = asyncio.run(_exchange(server.port, [Synthesize(text=SENTENCE).event()], "audio-stop"))
    samples, rate = _pcm(events)
    assert rate == 24000 and len(samples) > rate  # hibari speaks at 24 kHz; more than a second of audio
    back = asyncio.run(_exchange(server.port, [Transcribe(language="en").event()]
                                 + _audio_events(resample(samples, rate, 16000), 16000), "transcript"))
    text = Transcript.from_event(back[-1]).text
    assert wer(SENTENCE, text) <= 0.1, text


def test_streaming_synthesis(server):
    """Text in three chunks: audio for the first sentence starts before synthesize-stop."""
    parts = ["The quick brown fox jumps ", "over the lazy dog. Then it ", "sleeps in the sun."]
    voice = SynthesizeVoice(name="tts-1-hd/joe")

    async def run() -> tuple[list[Event], int]:
        got: list[Event] = []
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeStart(voice=voice).event())
            for p in parts:
                await client.write_event(SynthesizeChunk(text=p).event())
            early = None
            while early is None:  # the first sentence is complete: its audio comes before the stop
                ev = await asyncio.wait_for(client.read_event(), 120)
                got.append(ev)
                if ev.type == "audio-chunk":
                    early = len(got)
            await client.write_event(Synthesize(text="".join(parts), voice=voice).event())  # ignored while streaming
            await client.write_event(SynthesizeStop().event())
            while got[-1].type != "synthesize-stopped":
                got.append(await asyncio.wait_for(client.read_event(), 120))
        return got, early

    events, _early = asyncio.run(run())
    types = [e.type for e in events]
    assert types[0] == "audio-start" and types.count("audio-start") == 1 and types.count("audio-stop") == 1
    assert types[-2:] == ["audio-stop", "synthesize-stopped"]
    samples, rate = _pcm(events)
    assert rate == 22050 and len(samples) > 2 * rate  # piper (joe) at 22.05 kHz, both sentences


def test_errors_are_events(server):
    events = asyncio.run(_exchange(server.port, [Synthesize(text="Hi.", voice=SynthesizeVoice(name="nope/x")).event()],
                                   "audio-stop"))
    assert events[-1].type == "error" and "nope" in events[-1].data["text"]
    events = asyncio.run(_exchange(server.port, [AudioStop().event()], "transcript"))
    assert events[-1].type == "error"


def test_speech_over_the_servers_limit_is_an_error_event(server):
    """``max_speech_chars`` (120 here) bounds Wyoming's synthesize text as it bounds HTTP's."""
    events = asyncio.run(_exchange(server.port, [Synthesize(text="word " * 30).event()], "audio-stop"))
    assert events[-1].type == "error" and "the limit is 120" in events[-1].data["text"], events[-1].data
    assert not any(ev.type == "audio-start" for ev in events)


def test_cli_refuses_a_bad_uri():
    r = subprocess.run([sys.executable, "-m", "voxbox.cli", "wyoming", "--uri", "http://x"], check=False,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error: --uri") and r.stderr.count("\n") == 1


def test_partial_transcripts_while_audio_arrives(server, moonshine_assets):
    """Audio at real-time pace: transcript-chunk events arrive before audio-stop is sent; the
    chunks add up to the start of the final transcript."""
    samples = decode(str(moonshine_assets / "two_cities.wav"), sample_rate=16000).samples[: 16000 * 7]
    events = _audio_events(samples, 16000)

    async def run() -> tuple[list[Event], int]:
        got: list[Event] = []
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Transcribe(language="en").event())
            loop = asyncio.get_running_loop()
            t0 = loop.time()

            async def reader() -> None:
                while True:
                    ev = await client.read_event()
                    if ev is None:
                        return
                    got.append(ev)
                    if ev.type == "transcript":
                        return

            task = asyncio.create_task(reader())
            for i, ev in enumerate(events[:-1]):
                await client.write_event(ev)
                await asyncio.sleep(max(0.0, t0 + i * 0.1 - loop.time()))
            before_stop = sum(e.type == "transcript-chunk" for e in got)
            await client.write_event(events[-1])
            await asyncio.wait_for(task, 120)
        return got, before_stop

    got, before_stop = asyncio.run(run())
    assert before_stop >= 1, "no partial transcript while the audio was arriving"
    final = Transcript.from_event(got[-1]).text
    chunks = "".join(e.data["text"] for e in got if e.type == "transcript-chunk")
    assert "best of times" in final.lower()
    assert same_words(chunks.split(), final.split()[: len(chunks.split())])  # up to case and punctuation
    types = [e.type for e in got]
    assert types[0] == "transcript-start" and types.count("transcript-start") == 1
