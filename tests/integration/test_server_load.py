"""Load (admission control), client disconnect, and SIGTERM drain."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, free_port, make_settings  # noqa: E402

SHORT = "Load test sentence. Short and sweet."
LONG = " ".join(f"Sentence {i} of a long text that keeps the engine busy for a while." for i in range(55))


def test_32_streams_and_8_transcriptions_with_a_small_queue(tmp_path):
    settings = make_settings(tmp_path, admission={"max_concurrency": 1, "queue_size": 3, "request_timeout": 120})
    srv = RunningServer(settings).start()
    try:
        ref = httpx.post(srv.url + "/v1/audio/speech", timeout=60,
                         json={"model": "tts-1", "voice": "alloy", "input": SHORT, "response_format": "pcm"}).content
        ref_seconds = len(ref) / 2 / 24000
        wav = httpx.post(srv.url + "/v1/audio/speech", timeout=60,
                         json={"model": "tts-1", "voice": "alloy", "response_format": "wav",
                               "input": "The quick brown fox jumps over the lazy dog."}).content

        def speech(i: int):
            with httpx.stream("POST", srv.url + "/v1/audio/speech", timeout=120,
                              json={"model": "tts-1", "voice": "alloy", "input": SHORT, "response_format": "wav"}) as r:
                return "speech", r.status_code, dict(r.headers), b"".join(r.iter_bytes())

        def transcribe(i: int):
            r = httpx.post(srv.url + "/v1/audio/transcriptions", timeout=120,
                           files={"file": ("a.wav", wav, "audio/wav")}, data={"model": "whisper-1"})
            return "asr", r.status_code, dict(r.headers), r.content

        with concurrent.futures.ThreadPoolExecutor(40) as ex:
            futures = [ex.submit(speech, i) for i in range(32)] + [ex.submit(transcribe, i) for i in range(8)]
            results = [f.result() for f in futures]

        statuses = [s for _, s, _, _ in results]
        assert not [s for s in statuses if s >= 500], statuses
        assert set(statuses) <= {200, 429}, statuses
        rejected = [(kind, h) for kind, s, h, _ in results if s == 429]
        assert rejected, "a queue of 3 cannot absorb 32 concurrent streams"
        assert any(kind == "asr" for kind, _ in rejected)  # 8 transcriptions > 1 running + 3 queued
        for _, headers in rejected:
            assert int(headers["retry-after"]) >= 1
        accepted = [(kind, body) for kind, s, _, body in results if s == 200]
        assert sum(kind == "speech" for kind, _ in accepted) >= 4
        assert sum(kind == "asr" for kind, _ in accepted) >= 1
        import json

        for kind, body in accepted:
            if kind == "speech":
                samples, rate = decode_bytes(body, "wav")
                assert abs(len(samples) / rate - ref_seconds) < 0.05
            else:
                assert "fox" in json.loads(body)["text"].lower()
        assert srv.metric("voxbox_rejected_total", model="tts-1") >= 1
        assert srv.metric("voxbox_queue_depth", model="tts-1") == 0
        assert srv.metric("voxbox_running_requests", model="tts-1") == 0
        assert httpx.get(srv.url + "/health").status_code == 200
    finally:
        srv.stop()


def test_disconnect_frees_the_slot_and_stops_generation(tmp_path):
    settings = make_settings(tmp_path, admission={"max_concurrency": 1, "queue_size": 0},
                             models={"preload_defaults": False, "preload": ["tts-1"]})
    srv = RunningServer(settings).start()
    body = {"model": "tts-1", "voice": "alloy", "input": LONG, "response_format": "pcm"}
    short = {"model": "tts-1", "voice": "alloy", "input": "Next.", "response_format": "wav"}
    try:
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", srv.url + "/v1/audio/speech", json=body) as r:
                assert r.status_code == 200
                chunks = r.iter_raw()  # keep a reference: a collected iterator closes the connection
                next(chunks)
                # the only slot is taken and there is no queue: a second request is refused
                busy = httpx.post(srv.url + "/v1/audio/speech", json=short, timeout=30)
                assert busy.status_code == 429 and "retry-after" in busy.headers
                r.close()  # hang up mid-stream
        t0 = time.monotonic()
        while True:
            r2 = httpx.post(srv.url + "/v1/audio/speech", json=short, timeout=30)
            if r2.status_code == 200 or time.monotonic() - t0 > 5:
                break
            time.sleep(0.05)
        assert r2.status_code == 200, "the disconnected stream kept its slot"
        assert srv.metric("voxbox_cancelled_streams_total", model="tts-1") == 1
        # generation stopped early: far less than the ~55 sentences (~3 min of audio) were made
        produced = srv.metric("voxbox_audio_produced_seconds_total", model="tts-1")
        assert produced < 90, produced
    finally:
        srv.stop()


def _start_server_process(tmp_path, grace: float, model: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "VOXBOX_DATA_DIR": str(tmp_path), "VOXBOX_MODELS__PRELOAD_DEFAULTS": "false",
           "VOXBOX_MODELS__PRELOAD": f'["{model}"]'}
    env.pop("VOXBOX_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "serve", "--port", str(port), "--grace", str(grace)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    proc.kill()
    pytest.fail("server did not become ready")


@pytest.mark.parametrize("grace, complete, model", [(30, True, "tts-1"), (2, False, "tts-1-hd")])
def test_sigterm_drains_in_flight_and_exits_0(tmp_path, grace, complete, model):
    """SIGTERM: readiness fails at once while the listener stays open, new work is refused, the
    stream in flight finishes (long grace) or is cut cleanly at the limit (short grace); exit 0 and
    no ERROR or traceback in the log."""
    proc, url = _start_server_process(tmp_path, grace, model)
    try:
        # piper makes this text in ~15 s on 2 cores: longer than the short grace
        text = LONG[:1500] if complete else (LONG * 3)[:4000]
        body = {"model": model, "voice": "alloy", "input": text, "response_format": "pcm"}
        with httpx.stream("POST", url + "/v1/audio/speech", json=body, timeout=60) as r:
            assert r.status_code == 200
            it = r.iter_raw()
            data = next(it)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            assert httpx.get(url + "/health", timeout=5).status_code == 200  # still listening
            ready = httpx.get(url + "/health/ready", timeout=5)
            assert ready.status_code == 503 and "shutting down" in ready.json()["error"]["message"]
            refused = httpx.post(url + "/v1/audio/speech", json={**body, "input": "Hi."}, timeout=5)
            assert refused.status_code == 503
            for chunk in it:
                data += chunk
                time.sleep(0.2)  # a slow reader: the stream takes longer than the short grace
        seconds = len(data) / 2 / 24000
        if complete:
            assert seconds > 40, seconds  # the in-flight stream finished completely
        else:
            assert seconds < 150, seconds  # cut at the grace limit (the whole text is ~250 s)
        rc = proc.wait(timeout=30)
        out = proc.stdout.read().decode()
        assert rc == 0, out
        assert "draining" in out
        assert "Traceback" not in out and " ERROR " not in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_work_past_the_request_timeout_is_504(tmp_path, moonshine_assets):
    """10 s of speech cannot be transcribed in 0.25 s on a CPU, and the request queued behind it
    times out waiting for the slot: both get 504, and the server keeps serving."""
    settings = make_settings(tmp_path, admission={"max_concurrency": 1, "queue_size": 2, "request_timeout": 0.25},
                             models={"preload_defaults": False, "preload": ["whisper-1"]})
    srv = RunningServer(settings).start()
    data = (moonshine_assets / "beckett.wav").read_bytes()

    def transcribe(_):
        t0 = time.monotonic()
        r = httpx.post(srv.url + "/v1/audio/transcriptions", timeout=60,
                       files={"file": ("a.wav", data, "audio/wav")}, data={"model": "whisper-1"})
        return r, time.monotonic() - t0

    try:
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            results = list(ex.map(transcribe, range(2)))
        for r, elapsed in results:
            assert r.status_code == 504, r.text
            assert r.json()["error"]["code"] == "timeout"
            assert elapsed < 10
        assert httpx.get(srv.url + "/health").status_code == 200
        # the timed-out work stops at its next segment and frees the slot
        deadline = time.monotonic() + 60
        while srv.metric("voxbox_running_requests", model="whisper-1") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.metric("voxbox_running_requests", model="whisper-1") == 0
        assert srv.state.runtime.admissions[("faster-whisper", None)].running == 0
    finally:
        srv.stop()
