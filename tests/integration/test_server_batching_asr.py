"""faster-whisper batching across requests through a real server on loopback and the openai SDK.

The operator turns batching on for the CPU (``admission.batching``). Concurrent transcriptions
(one of them streamed) give the text a lone request gives and share CTranslate2 calls; a model
whose batch and queue are full still answers 429 with an OpenAI-shaped error.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings  # noqa: E402

pytest.importorskip("faster_whisper")
pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("asr_batch"),
                             models={"preload_defaults": False, "preload": ["whisper-1"], "device": "cpu"},
                             admission={"batching": True, "batch_max": 3, "batch_window_ms": 100, "queue_size": 1})
    srv = RunningServer(settings).start(ready_timeout=300)
    yield srv
    srv.stop()


def _scheduler(srv: RunningServer) -> Any:
    rt = srv.state.runtime
    return rt.schedulers[rt.catalog.resolve("whisper-1").key]


def _transcribe(client: Any, data: bytes, stream: bool = False) -> str:
    if stream:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data), stream=True,
                                                         temperature=0.0))
        return next(e.text for e in events if e.type == "transcript.text.done")
    return client.audio.transcriptions.create(model="whisper-1", file=("a.wav", data), temperature=0.0).text


def _together(fns: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(fns)
    gate = threading.Barrier(len(fns))

    def go(i: int) -> None:
        gate.wait()
        try:
            out[i] = fns[i]()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def test_concurrent_transcriptions_share_calls(server, moonshine_assets):
    client = server.openai()
    clips = [(moonshine_assets / n).read_bytes() for n in ("beckett.wav", "clone-test.wav", "endgame_nagg_nell.wav")]
    alone = [_transcribe(client, c) for c in clips]
    st0 = _scheduler(server).batcher.stats()
    admitted0 = server.metric("voxbox_batch_admitted_total", model="whisper-1")
    got = _together([lambda c=c, i=i: _transcribe(client, c, stream=i == 0) for i, c in enumerate(clips)])
    assert got == alone
    st = _scheduler(server).batcher.stats()
    calls, rows = (st["calls"]["generate"] - st0["calls"]["generate"], st["rows"]["generate"] - st0["rows"]["generate"])
    assert rows >= 3 and calls < rows  # windows of different requests shared a generate call
    # the scheduler's counters on /metrics (what an operator graphs): every window was admitted
    assert server.metric("voxbox_batch_admitted_total", model="whisper-1") - admitted0 >= 3
    text = httpx.get(server.url + "/metrics", timeout=30).text
    assert 'voxbox_batch_slots{model="whisper-1"} 3.0' in text
    steps = server.metric("voxbox_batch_steps_total", model="whisper-1")
    assert steps > 0 and server.metric("voxbox_batch_rows_total", model="whisper-1") >= steps


def test_full_batch_and_queue_answer_429(server, moonshine_assets):
    data = (moonshine_assets / "beckett.wav").read_bytes()

    def post() -> httpx.Response:
        return httpx.post(server.url + "/v1/audio/transcriptions", timeout=300,
                          files={"file": ("a.wav", data, "audio/wav")}, data={"model": "whisper-1"})

    res = _together([post] * 7)  # 3 in the batch, 1 queued: the rest are turned away
    codes = sorted(r.status_code for r in res)
    assert codes.count(200) >= 3 and 429 in codes and set(codes) <= {200, 429}
    busy = next(r for r in res if r.status_code == 429)
    assert busy.json()["error"]["type"] and "retry-after" in busy.headers
