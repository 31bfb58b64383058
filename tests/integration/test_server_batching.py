"""Batching across requests through a real server on loopback (tiny random fish-s2 and echo-tts).

The operator turns batching on for the CPU (``admission.batching``; it is on by default only on
CUDA). Two concurrent speech requests for one model run as one batch (the scheduler's stats), the
model admits as many requests as its batch has slots, and a client that disconnects mid-stream
frees its slot for the next request while the other one finishes.
"""

from __future__ import annotations

import io
import sys
import threading
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, make_settings  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")
if __import__("importlib").util.find_spec("echo_tts") is None:
    pytest.skip("echo-tts is not installed (pip install --no-deps echo-tts)", allow_module_level=True)


def _wav(seconds: float = 0.2, rate: int = 44100) -> bytes:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
    from test_fish_s2_engine import build_tiny

    from voxbox.engines.tts.echo._random import write_random_model

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("batch_server")
    build_tiny(tmp / "fish")
    echo_dir = write_random_model(tmp / "echo", "tiny")
    local = {"fish-tiny": {"engine": "fish-s2", "path": str(tmp / "fish"), "options": {"max_frames": 12}},
             "echo-tiny": {"engine": "echo-tts", "path": str(echo_dir), "options": {"preset": "fast"}}}
    settings = make_settings(tmp / "data", models={"preload_defaults": False, "preload": list(local), "local": local,
                                                   "tts": "fish-tiny", "device": "cpu"},
                             admission={"batching": True, "batch_max": 2, "batch_window_ms": 300, "queue_size": 4})
    srv = RunningServer(settings).start(ready_timeout=300)
    # 0.2 s: long enough for echo (8192 samples), short enough for the tiny fish context
    r = httpx.post(srv.url + "/v1/voices", data={"name": "ref", "transcript": "A reference."},
                   files={"file": ("ref.wav", _wav(), "audio/wav")})
    assert r.status_code == 201, r.text
    yield srv
    srv.stop()


def _scheduler(srv: RunningServer, name: str):
    rt = srv.state.runtime
    return rt.schedulers[rt.catalog.resolve(name).key]


def _speak(srv: RunningServer, model: str, text: str) -> httpx.Response:
    return httpx.post(srv.url + "/v1/audio/speech", timeout=300,
                      json={"model": model, "voice": "ref", "input": text, "response_format": "wav"})


def test_two_concurrent_requests_share_a_batch(server):
    sched = _scheduler(server, "fish-tiny")
    gate = server.state.runtime.admission(server.state.runtime.loaded("fish-tiny"))
    assert sched.max_batch == 2 and gate.max_concurrency == 2  # admission follows the batch
    before = sched.stats.admitted
    out: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda t=t: out.append(_speak(server, "fish-tiny", t)))
               for t in ("Hello there.", "Another sentence.")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [r.status_code for r in out] == [200, 200], [r.text for r in out]
    for r in out:
        samples, rate = decode_bytes(r.content, "wav")
        assert rate == 44100 and 0 < len(samples) <= 12 * 2048 and np.isfinite(samples).all()
        assert "decode" in r.headers["server-timing"] and "prefill" in r.headers["server-timing"]
    assert sched.stats.admitted - before == 2 and sched.stats.max_active == 2
    assert sched.stats.batch_sizes.get(2, 0) > 0  # steps that ran both at once


def test_disconnect_frees_the_slot(server):
    sched = _scheduler(server, "echo-tiny")
    gate = server.state.runtime.admission(server.state.runtime.loaded("echo-tiny"))
    body = {"model": "echo-tiny", "voice": "ref", "input": "Hello there.", "response_format": "pcm"}
    result: dict[str, httpx.Response] = {}
    stayer = threading.Thread(target=lambda: result.setdefault("b", _speak(server, "echo-tiny", "Hello there.")))
    with httpx.Client(timeout=300) as client:
        with client.stream("POST", server.url + "/v1/audio/speech", json=body) as resp:
            stayer.start()
            assert resp.status_code == 200
            next(resp.iter_raw())  # the first chunk has arrived: this request is mid-batch
        # leaving the block closed the connection
    end = time.monotonic() + 30
    while sched.stats.cancelled == 0 and time.monotonic() < end:
        time.sleep(0.02)
    assert sched.stats.cancelled == 1
    third = _speak(server, "echo-tiny", "A third request.")  # gets the freed slot
    stayer.join(120)
    assert third.status_code == 200 and result["b"].status_code == 200
    for r in (third, result["b"]):
        samples, _ = decode_bytes(r.content, "wav")
        assert len(samples) > 0 and np.isfinite(samples).all()
    end = time.monotonic() + 10
    while gate.running and time.monotonic() < end:
        time.sleep(0.02)
    assert gate.running == 0 and not sched._active
