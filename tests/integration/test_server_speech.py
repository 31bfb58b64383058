"""POST /v1/audio/speech through a real uvicorn server and the official openai SDK."""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, make_settings, sse_events, validate  # noqa: E402

TEXT = "Hello from voxbox. This is a short test."
LONG = " ".join(f"This is sentence number {i} of a longer paragraph for streaming." for i in range(1, 9))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("speech"),
                             models={"preload_defaults": False, "preload": ["tts-1", "tts-1-hd"]})
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


@pytest.fixture(scope="module")
def reference_seconds(client):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="pcm").content
    return len(audio) / 2 / 24000


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format_decodes_to_expected_length(client, reference_seconds, fmt):
    resp = client.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format=fmt)
    data = resp.content
    assert len(data) > 100
    samples, rate = decode_bytes(data, fmt)
    seconds = len(samples) / rate
    assert reference_seconds > 1.0
    # Codecs add priming/padding (AAC, Opus ~ tens of ms); hibari's durations are deterministic.
    assert abs(seconds - reference_seconds) < 0.15, (fmt, seconds, reference_seconds)
    assert float(abs(samples).max()) > 0.05  # not silence


def test_streamed_wav_has_one_header(server):
    with httpx.stream("POST", server.url + "/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "alloy", "input": LONG, "response_format": "wav"}) as r:
        assert r.status_code == 200
        data = b"".join(r.iter_bytes())
    assert data.count(b"RIFF") == 1 and data.count(b"WAVEfmt") == 1
    samples, rate = decode_bytes(data, "wav")
    assert rate == 24000 and len(samples) / rate > 10


def test_first_bytes_arrive_before_synthesis_completes(server):
    t0 = time.perf_counter()
    arrivals = []
    with httpx.stream("POST", server.url + "/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "alloy", "input": LONG, "response_format": "pcm"}) as r:
        assert r.status_code == 200
        for chunk in r.iter_raw():
            if chunk:
                arrivals.append((time.perf_counter() - t0, len(chunk)))
    first, last = arrivals[0][0], arrivals[-1][0]
    total = sum(n for _, n in arrivals)
    assert total / 2 / 24000 > 10
    # 8 sentences: the first one is out long before the last is synthesized.
    assert first < 0.5 * last, arrivals[:3]
    timing = r.headers["server-timing"]
    for stage in ("queue", "load", "phonemize", "synthesize", "encode"):
        assert f"{stage};dur=" in timing


def test_sse_events_validate_and_carry_audio(server):
    with httpx.stream("POST", server.url + "/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm",
                            "stream_format": "sse"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.iter_lines())
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    assert events[-1]["type"] == "speech.audio.done"
    for e in events:
        validate("CreateSpeechResponseStreamEvent", e)
        validate("SpeechAudioDeltaEvent" if e["type"] == "speech.audio.delta" else "SpeechAudioDoneEvent", e)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert len(pcm) / 2 / 24000 > 1.0
    stages = events[-1]["timings_ms"]
    for stage in ("queue", "load", "phonemize", "synthesize", "encode", "total"):
        assert stage in stages


def test_sse_mp3_concatenates_to_valid_file(server):
    with httpx.stream("POST", server.url + "/v1/audio/speech", timeout=60,
                      json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "mp3",
                            "stream_format": "sse"}) as r:
        events = sse_events(r.iter_lines())
    data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    samples, rate = decode_bytes(data, "mp3")
    assert len(samples) / rate > 1.0


def test_piper_and_voice_object(client):
    resp = client.audio.speech.create(model="tts-1-hd", voice="onyx", input="Piper speaks too.", response_format="wav")
    samples, rate = decode_bytes(resp.content, "wav")
    assert rate == 22050 and len(samples) / rate > 0.5
    # The OpenAI schema allows a custom voice reference object: {"id": ...}.
    resp = client.audio.speech.create(model="tts-1", voice={"id": "heart"}, input="Hi.", response_format="wav")
    assert len(resp.content) > 1000


def test_speed_changes_length(client, reference_seconds):
    fast = client.audio.speech.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="pcm", speed=2.0
    ).content
    assert len(fast) / 2 / 24000 < 0.75 * reference_seconds


def test_server_timing_and_metrics(server, client):
    before = server.metric("voxbox_time_to_first_audio_seconds_count", model="tts-1")
    raw = client.audio.speech.with_raw_response.create(
        model="tts-1", voice="alloy", input="Metrics.", response_format="wav"
    )
    assert "ttfa;dur=" in raw.headers["server-timing"]
    assert server.metric("voxbox_time_to_first_audio_seconds_count", model="tts-1") == before + 1
    assert server.metric("voxbox_audio_produced_seconds_total", model="tts-1") > 0
    text = httpx.get(server.url + "/metrics").text
    for name in ("voxbox_requests_total", "voxbox_request_duration_seconds", "voxbox_time_to_first_audio_seconds",
                 "voxbox_rtf", "voxbox_queue_depth", "voxbox_model_loaded", "voxbox_model_load_seconds"):
        assert name in text
