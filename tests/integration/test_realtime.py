"""/v1/realtime (OpenAI Realtime transcription sessions) against a real server on loopback, with the
official ``openai`` SDK's realtime client (GA dialect) and a raw ``websockets`` client (beta dialect,
key as a subprotocol, as browsers send it)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings

websockets = pytest.importorskip("websockets")

from voxbox.audio.decode import decode  # noqa: E402
from voxbox.realtime.agreement import same_words  # noqa: E402
from voxbox.text import wer  # noqa: E402

KEY = "sk-live-test"
CHUNK_S = 0.1  # what a microphone client sends at a time


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("rt"), api_key=KEY,
                             models={"preload_defaults": False, "preload": ["whisper-1"]},
                             realtime={"partial_interval_ms": 400})
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def recordings(moonshine_assets) -> dict[str, np.ndarray]:
    return {name: decode(str(moonshine_assets / f"{name}.wav"), sample_rate=24000).samples
            for name in ("beckett", "two_cities")}


@pytest.fixture(scope="module")
def file_text(server, moonshine_assets) -> dict[str, str]:
    """What /v1/audio/transcriptions makes of the same recordings (the reference for the finals)."""
    client = server.openai(api_key=KEY)
    return {"beckett": client.audio.transcriptions.create(
        model="whisper-1", file=("beckett.wav", (moonshine_assets / "beckett.wav").read_bytes())).text}


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def _lin2ulaw(pcm: bytes) -> bytes:
    """G.711 μ-law encoding of 16-bit PCM (the textbook compander; audioop is gone in Python 3.13)."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def _chunks(samples: np.ndarray, rate: int = 24000) -> list[str]:
    pcm = _pcm16(samples)
    step = int(rate * CHUNK_S) * 2
    return [base64.b64encode(pcm[i : i + step]).decode() for i in range(0, len(pcm), step)]


async def _stream(send: Any, samples: np.ndarray, speed: float) -> float:
    """Append ``samples`` in 100 ms chunks at ``speed`` x real time; the wall time it took."""
    t0 = time.monotonic()
    for i, b64 in enumerate(_chunks(samples)):
        await send(b64)
        delay = t0 + (i + 1) * CHUNK_S / speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return time.monotonic() - t0


def _ws_url(server: RunningServer) -> str:
    return server.url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


async def _raw_session(server: RunningServer, samples: np.ndarray, speed: float, *, settle: float = 8.0,
                       update: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A beta-dialect session over a raw websocket; every server event received, in order."""
    events: list[dict[str, Any]] = []
    async with websockets.connect(_ws_url(server), subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"],
                                  max_size=None) as ws:
        assert ws.subprotocol == "realtime"  # echoed, as browsers require

        async def reader() -> None:
            async for message in ws:
                events.append(json.loads(message))

        task = asyncio.create_task(reader())
        await ws.send(json.dumps(update or {"type": "transcription_session.update", "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                               "silence_duration_ms": 500}}}))
        await _stream(lambda b: ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b})), samples, speed)
        await _settle(lambda: [e["type"] for e in events], settle)
        task.cancel()
    return events


async def _settle(types: Any, timeout: float) -> None:
    """Wait until every turn that started was committed and transcribed, and the server has been
    quiet for a second (audio sent last may still be in its queue), or ``timeout``."""
    deadline = time.monotonic() + timeout
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        t = types()
        if len(t) != seen:
            seen, quiet_since = len(t), time.monotonic()
        started = t.count("input_audio_buffer.speech_started")
        committed = t.count("input_audio_buffer.committed")
        done = t.count("conversation.item.input_audio_transcription.completed") + \
            t.count("conversation.item.input_audio_transcription.failed")
        if started == committed == done and time.monotonic() - quiet_since >= 1.0:
            return
        await asyncio.sleep(0.1)


def _finals(events: list[dict[str, Any]]) -> str:
    return " ".join(e["transcript"] for e in events
                    if e["type"] == "conversation.item.input_audio_transcription.completed")


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(24000 * seconds), np.float32)


def test_sdk_and_raw_sessions_together(server, recordings, file_text):
    """Two concurrent sessions share the model: the SDK's GA client streams beckett in real time,
    a raw beta-dialect client streams it at 2x; both sets of finals match the file transcription."""
    from openai import AsyncOpenAI
    from openai.types.realtime import (
        ConversationItemInputAudioTranscriptionCompletedEvent,
        InputAudioBufferSpeechStartedEvent,
        SessionUpdatedEvent,
    )

    samples = np.concatenate([_silence(0.5), recordings["beckett"], _silence(1.0)])

    async def sdk_session() -> list[Any]:
        client = AsyncOpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
        got: list[Any] = []
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})

            async def reader() -> None:
                async for event in conn:
                    got.append(event)

            task = asyncio.create_task(reader())
            await _stream(lambda b: conn.input_audio_buffer.append(audio=b), samples, 1.0)
            await _settle(lambda: [e.type for e in got], 30.0)
            task.cancel()
        return got

    async def both() -> tuple[list[Any], list[dict[str, Any]]]:
        return await asyncio.gather(sdk_session(), _raw_session(server, samples, 2.0, settle=30.0))

    sdk_events, raw_events = asyncio.run(both())

    types = [e.type for e in sdk_events]
    assert types[0] == "session.created" and any(isinstance(e, SessionUpdatedEvent) for e in sdk_events)
    started = [e for e in sdk_events if isinstance(e, InputAudioBufferSpeechStartedEvent)]
    assert started and 0 < started[0].audio_start_ms < 1000 and started[0].item_id.startswith("item_")
    completed = [e for e in sdk_events if isinstance(e, ConversationItemInputAudioTranscriptionCompletedEvent)]
    assert completed and all(e.usage.type == "duration" for e in completed)
    assert types.count("input_audio_buffer.committed") == len(completed)
    sdk_text = " ".join(e.transcript for e in completed)
    assert wer(file_text["beckett"], sdk_text) <= 0.05, (file_text["beckett"], sdk_text)

    raw_types = [e["type"] for e in raw_events]
    assert "transcription_session.updated" in raw_types and "conversation.item.created" in raw_types
    raw_text = _finals(raw_events)
    assert wer(file_text["beckett"], raw_text) <= 0.05, (file_text["beckett"], raw_text)


def test_partial_deltas_while_speaking(server, recordings):
    """The first sentence of two_cities is one 7 s turn: deltas arrive before its speech_stopped,
    and the deltas of an item add up to a prefix of its final transcript."""
    clip = np.concatenate([recordings["two_cities"][: 24000 * 9], _silence(1.0)])
    events = asyncio.run(_raw_session(server, clip, 1.0, settle=30.0))
    stopped_at = {e["item_id"]: i for i, e in enumerate(events) if e["type"] == "input_audio_buffer.speech_stopped"}
    early = [i for i, e in enumerate(events) if e["type"] == "conversation.item.input_audio_transcription.delta"
             and i < stopped_at.get(e["item_id"], -1)]
    assert early, [(e["type"], e.get("delta") or e.get("transcript") or "") for e in events]
    finals = [e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert finals and "best of times" in finals[0]["transcript"].lower()
    for e in finals:  # the deltas add up to the final transcript's first words (up to case and punctuation)
        deltas = "".join(d["delta"] for d in events if d["type"].endswith(".delta") and d["item_id"] == e["item_id"])
        words = deltas.split()
        assert words and same_words(words, e["transcript"].split()[: len(words)]), (deltas, e["transcript"])


def test_silence_produces_no_items(server):
    noise = 0.003 * np.random.default_rng(1).standard_normal(24000 * 3).astype(np.float32)
    events = asyncio.run(_raw_session(server, np.concatenate([_silence(3.0), noise]), 6.0, settle=0.5))
    types = {e["type"] for e in events}
    assert "transcription_session.updated" in types
    assert not types & {"input_audio_buffer.speech_started", "input_audio_buffer.committed",
                        "conversation.item.input_audio_transcription.completed"}


def test_manual_commit_g711_and_errors(server, recordings, file_text):
    """turn_detection null: the client commits. μ-law audio at 8 kHz; an empty commit, a bad event,
    an unknown model and bad base64 are error events and the session goes on."""
    from voxbox.audio.resample import resample

    ulaw = _lin2ulaw(_pcm16(resample(recordings["beckett"], 24000, 8000)))

    async def run() -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        async with websockets.connect(_ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            async def send(ev: dict[str, Any]) -> None:
                await ws.send(json.dumps(ev))

            async def until(kind: str) -> dict[str, Any]:
                while True:
                    ev = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    events.append(ev)
                    if ev["type"] == kind:
                        return ev

            await until("session.created")
            await send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcmu"}, "transcription": {"model": "whisper-1", "language": "en"},
                "turn_detection": None}}}})
            updated = await until("session.updated")
            assert updated["session"]["audio"]["input"]["turn_detection"] is None
            await send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
            await until("error")
            await send({"type": "response.create"})
            await until("error")
            await send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "transcription": {"model": "no-such-model"}}}}})
            await until("error")
            await send({"type": "input_audio_buffer.append", "audio": "***"})
            await until("error")
            await ws.send("not json")
            await until("error")
            for i in range(0, len(ulaw), 800):  # 100 ms of 8 kHz μ-law
                await send({"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw[i : i + 800]).decode()})
            await send({"type": "input_audio_buffer.commit"})
            await until("conversation.item.input_audio_transcription.completed")
            # switch to server VAD mid-session: turn times stay on the session's timeline
            await send({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}}})
            await until("session.updated")
            silence = bytes([0xFF]) * 8000  # 1 s of μ-law silence
            for i in range(0, len(ulaw + silence), 800):
                await send({"type": "input_audio_buffer.append",
                            "audio": base64.b64encode((ulaw + silence)[i : i + 800]).decode()})
            started = await until("input_audio_buffer.speech_started")
            assert started["audio_start_ms"] >= 9500, started  # after the first 10 s, not from 0
            await until("conversation.item.input_audio_transcription.completed")
        return events

    events = asyncio.run(run())
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["input_audio_buffer_commit_empty", "unknown_event", "model_not_found",
                                           "invalid_value", "invalid_json"]
    assert errors[0]["event_id"] == "evt_empty"
    assert all(set(e) >= {"type", "code", "message", "param"} for e in errors)
    assert not any(bad in e["message"] for e in errors for bad in ("Traceback", ".py", "site-packages"))
    finals = [e["transcript"] for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert wer(file_text["beckett"], finals[0]) <= 0.1  # 8 kHz μ-law loses some detail


def test_clear_drops_uncommitted_audio(server, recordings):
    async def run() -> list[dict[str, Any]]:
        async with websockets.connect(_ws_url(server), additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            got = [json.loads(await ws.recv())]  # session.created
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                "input": {"turn_detection": None}}}}))
            got.append(json.loads(await ws.recv()))
            half_second = base64.b64encode(_pcm16(recordings["beckett"][:12000])).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": half_second}))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            got.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # nothing left to commit
            got.append(json.loads(await ws.recv()))
            return got

    events = asyncio.run(run())
    assert [e["type"] for e in events] == ["session.created", "session.updated", "input_audio_buffer.cleared", "error"]
    assert events[-1]["error"]["code"] == "input_audio_buffer_commit_empty"


def test_key_host_and_intent_are_checked(server):
    async def refused(**kw: Any) -> int:
        try:
            async with websockets.connect(_ws_url(server), **kw):
                return 0
        except websockets.exceptions.InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(refused()) == 403  # no key
    assert asyncio.run(refused(subprotocols=["realtime", "openai-insecure-api-key.wrong"])) == 403
    evil = {"Authorization": f"Bearer {KEY}", "Origin": "http://evil.example"}
    assert asyncio.run(refused(additional_headers=evil)) == 403

    async def wrong_intent() -> dict[str, Any]:
        url = _ws_url(server).replace("intent=transcription", "intent=conversation")
        async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            return json.loads(await ws.recv())

    ev = asyncio.run(wrong_intent())
    assert ev["type"] == "error" and ev["error"]["code"] == "invalid_intent"


def test_server_reports_realtime_capability(server):
    import httpx

    r = httpx.get(server.url + "/v1/server", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert r.status_code == 200 and r.json()["capabilities"]["realtime"] is True
