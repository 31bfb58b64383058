"""`voxbox bench --url`: the same report shape, measured over HTTP against a real voxbox server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from voxbox.bench.remote import parse_server_timing, run_http
from voxbox.bench.report import render_markdown, validate_report
from voxbox.bench.scenarios import load_scenarios

pytest.importorskip("jsonschema")
sys.path.insert(0, str(Path(__file__).parent))


def test_parse_server_timing() -> None:
    st = parse_server_timing("queue;dur=1.5, ttfa;dur=40, synthesize;dur=30.25, total;dur=50")
    assert st == pytest.approx({"queue": 0.0015, "synthesize": 0.03025})
    assert parse_server_timing(None) == {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    from server_harness import RunningServer, make_settings

    srv = RunningServer(make_settings(tmp_path_factory.mktemp("srv"))).start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("task,model", [("tts", "hibari"), ("asr", "whisper-1")])
def test_http_bench_report(server, task: str, model: str, tmp_path: Path) -> None:
    scen = load_scenarios(quick=True)
    report = run_http(task, scen, url=server.url, out_dir=tmp_path, models=[model], concurrency=[1, 2], runs=1,
                      warmup=1, texts=["short"] if task == "tts" else None,
                      clips=["beckett"] if task == "asr" else None, quick=True)
    validate_report(report)
    assert report["mode"] == "http" and report["url"] == server.url
    (target,) = report["targets"]
    assert target["status"] == "ok" and target["first_call_s"] > 0
    rows = sorted(report["rows"], key=lambda r: r["concurrency"])
    assert [r["concurrency"] for r in rows] == [1, 2]
    for r in rows:
        assert r["status"] == "ok" and r["failed_requests"] == 0 and len(r["runs"]) == r["requests"]
        assert r["latency"]["p50"] <= r["latency"]["p95"] <= r["latency"]["p99"]
        assert r["throughput_xrt"] > 0
        for run in r["runs"]:
            assert run["rtf"] > 0 and sum(run["stages"].values()) <= run["total_s"] * 1.001 + 1e-6
            if task == "tts":
                assert 0 < run["ttfa_s"] <= run["total_s"] and 3.0 < run["audio_s"] < 6.0
    if task == "asr":
        assert rows[0]["quality"]["wer"] <= 0.2
    assert "p95 s" in render_markdown(report)
