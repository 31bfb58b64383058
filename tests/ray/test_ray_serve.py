"""``voxbox serve --ray`` on a real local Ray cluster, through the official openai SDK and raw HTTP,
compared with the plain server on the same requests."""

from __future__ import annotations

import base64
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from ray_harness import RayServer, assert_same_timed
from server_harness import RunningServer, decode_bytes, make_settings, sse_events

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TEXT = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."
KEY = "sk-ray-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def ray_server(cluster):
    # 0.3 CPU per model replica: the ingress (0.5) and two replicas of each model fit in 2 CPUs.
    # max-ongoing 1 and queue-size 1 (Serve's max_queued_requests) make a small flood overflow.
    srv = RayServer(cluster, "--replica-cpus", "0.3", "--max-ongoing", "1", "--queue-size", "1",
                    "--replicas", "1-2", "--api-key", KEY)
    try:
        yield srv.wait_ready()
    finally:
        assert srv.stop() == 0, srv.output()[-2000:]


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    srv = RunningServer(make_settings(tmp_path_factory.mktemp("plain"), api_key=KEY)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def speech_wav(plain) -> bytes:
    return (
        plain.openai(KEY).audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav").content
    )


def _close(a: np.ndarray, b: np.ndarray) -> None:
    """Same audio: same length, and the same waveform up to float rounding (the replica runs the
    engine on one thread, the plain server on several)."""
    assert len(a) == len(b) and len(a) > 24000
    assert float(np.corrcoef(a, b)[0, 1]) > 0.999


def test_speech_chunked_same_as_plain(ray_server, plain):
    args = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "wav"}
    with ray_server.openai(KEY).audio.speech.with_streaming_response.create(**args) as r:
        assert r.headers["content-type"] == "audio/wav"
        assert "ttfa;dur=" in r.headers["server-timing"]
        got = b"".join(r.iter_bytes())
    want = plain.openai(KEY).audio.speech.create(**args).content
    _close(decode_bytes(got, "wav")[0], decode_bytes(want, "wav")[0])


def test_speech_sse_same_as_plain(ray_server, plain):
    def pcm(url: str) -> tuple[bytes, dict[str, Any]]:
        with httpx.stream("POST", url + "/v1/audio/speech", timeout=120, headers=AUTH,
                          json={"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "pcm",
                                "stream_format": "sse"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.iter_lines())
        assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
        assert events[-1]["type"] == "speech.audio.done"
        return b"".join(base64.b64decode(e["audio"]) for e in events[:-1]), events[-1]

    got, done = pcm(ray_server.url)
    want, want_done = pcm(plain.url)
    _close(decode_bytes(got, "pcm")[0], decode_bytes(want, "pcm")[0])
    assert done["audio_seconds"] == want_done["audio_seconds"]
    assert "synthesize" in done["timings_ms"]  # the replica's stage timings came back through Serve


def test_transcription_json_and_sse_same_as_plain(ray_server, plain, speech_wav):
    got = ray_server.openai(KEY).audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav))
    want = plain.openai(KEY).audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav))
    assert got.text == want.text and "fox" in got.text.lower()
    events = list(ray_server.openai(KEY).audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav),
                                                                  stream=True))
    assert [e.type for e in events][-1] == "transcript.text.done"
    assert events[-1].text == want.text
    assert "".join(e.delta for e in events[:-1]).strip() == want.text
    verbose = ray_server.openai(KEY).audio.transcriptions.create(
        model="whisper-1", file=("a.wav", speech_wav), response_format="verbose_json", timestamp_granularities=["word"])
    plain_verbose = plain.openai(KEY).audio.transcriptions.create(
        model="whisper-1", file=("a.wav", speech_wav), response_format="verbose_json", timestamp_granularities=["word"])
    assert_same_timed([(w.word, w.start, w.end) for w in verbose.words],
                      [(w.word, w.start, w.end) for w in plain_verbose.words], tol=0.1)


@pytest.mark.parametrize("body", [
    {"model": "tts-1", "voice": "nobody", "input": "Hello."},      # the replica's engine refuses: 404
    {"model": "tts-1", "voice": "alloy", "input": ""},             # the front refuses: 400
    {"model": "tts-9", "voice": "alloy", "input": "Hello."},       # not in the catalog: 404
    {"model": "whisper-1", "voice": "alloy", "input": "Hello."},   # not a speech model: 404
])
def test_errors_same_as_plain(ray_server, plain, body):
    got = httpx.post(ray_server.url + "/v1/audio/speech", json=body, timeout=60, headers=AUTH)
    want = httpx.post(plain.url + "/v1/audio/speech", json=body, timeout=60, headers=AUTH)
    assert (got.status_code, got.json()) == (want.status_code, want.json())
    assert 400 <= got.status_code < 500


def test_api_key_same_as_plain(ray_server, plain):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        got = httpx.get(ray_server.url + "/v1/models", headers=headers, timeout=30)
        want = httpx.get(plain.url + "/v1/models", headers=headers, timeout=30)
        assert got.status_code == want.status_code == 401 and got.json() == want.json()
    assert httpx.get(ray_server.url + "/health", timeout=30).status_code == 200  # health stays open


def test_models_are_the_deployed_ones(ray_server):
    ids = {m.id for m in ray_server.openai(KEY).models.list()}
    assert {"tts-1", "whisper-1"} <= ids and "tts-1-hd" not in ids  # only deployed models are offered


def test_flood_gets_429_with_retry_after(ray_server, moonshine_assets):
    data = (moonshine_assets / "beckett.wav").read_bytes()
    out: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        r = httpx.post(ray_server.url + "/v1/audio/transcriptions", files={"file": ("b.wav", data)},
                       data={"model": "whisper-1"}, timeout=120, headers=AUTH)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    codes = sorted(r.status_code for r in out)
    assert len(out) == 10 and set(codes) <= {200, 429}, codes
    refused = [r for r in out if r.status_code == 429]
    assert refused and any(r.status_code == 200 for r in out)
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_exceeded"
    # Serve's own backpressure (max_queued_requests) is one of the refusals, mapped to the same 429
    assert any("queued" in r.json()["error"]["message"] for r in refused), [r.json() for r in refused]


def test_killed_replica_is_replaced_and_no_request_hangs(ray_server, cluster, moonshine_assets):
    import ray

    data = (moonshine_assets / "two_cities.wav").read_bytes()  # 44 s: long enough to be killed mid-way
    results: list[tuple[int, Any, float]] = []

    def one() -> None:
        t0 = time.monotonic()
        r = httpx.post(ray_server.url + "/v1/audio/transcriptions", files={"file": ("t.wav", data)},
                       data={"model": "whisper-1"}, timeout=180, headers=AUTH)
        results.append((r.status_code, r.json(), time.monotonic() - t0))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "model-whisper-1" in a["name"]]
    assert replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    for t in threads:
        t.join(200)
    assert len(results) == 2 and not any(t.is_alive() for t in threads)  # none hangs
    for status, body, _ in results:
        if status == 200:
            assert "best of times" in body["text"]
        else:  # a clean OpenAI-shaped error, no traceback, no Ray internals
            assert status in (429, 503), body
            assert set(body["error"]) >= {"message", "type", "code"} and "Traceback" not in body["error"]["message"]
    # Serve starts a new replica; requests succeed again
    deadline = time.monotonic() + 120
    while True:
        r = httpx.post(ray_server.url + "/v1/audio/transcriptions", timeout=180, headers=AUTH,
                       files={"file": ("b.wav", (moonshine_assets / "beckett.wav").read_bytes())},
                       data={"model": "whisper-1"})
        if r.status_code == 200:
            assert "ever tried" in r.json()["text"].lower()
            break
        assert r.status_code in (429, 503) and time.monotonic() < deadline, r.text
        time.sleep(2)
