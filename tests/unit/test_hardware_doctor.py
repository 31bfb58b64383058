"""`voxbox doctor`: JSON and rich reports, --probe / --no-probe / cached, recorded machines."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from voxbox.cli import main
from voxbox.engines.registry import ENGINES
from voxbox.hardware.detect import load_machine
from voxbox.hardware.doctor import build_report, render_report, standard_probes

DATA = Path(__file__).parents[1] / "data" / "machines"
FIXTURES = sorted(p for p in DATA.glob("*.json") if not p.name.endswith(".probes.json"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path / "cache"))


def _render(report) -> str:
    buf = io.StringIO()
    render_report(report, Console(file=buf, width=140, color_system=None))
    return buf.getvalue()


def test_doctor_json_no_probe(capsys):
    main(["doctor", "--json", "--no-probe"])
    r = json.loads(capsys.readouterr().out)
    assert r["probe_mode"] == "none" and r["probes"] == []
    for key in ("machine", "fingerprint", "quirks", "asr_engine", "plans", "env", "warnings"):
        assert key in r
    assert set(r["machine"]["backends"]) == {"torch", "ctranslate2", "onnxruntime", "ggml"}
    fw = r["plans"]["faster-whisper"]["placements"][0]
    assert fw["reason"] and fw["device"]
    # what a second start reuses on this machine (the recorded machines below have no such section)
    assert set(r["startup"]) == {"compiled kernels", "bytecode", "weight reader threads"}
    assert int(r["startup"]["weight reader threads"]) >= 1


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_doctor_renders_recorded_machines(path):
    r = build_report(ENGINES.values(), machine_path=str(path))
    assert r["probe_mode"] == "none" and r["startup"] == {}
    text = _render(r)
    assert "Plan" in text and "ASR engine" in text and "Start-up" not in text
    if path.stem == "radeon-7800xt-gfx1101":
        assert "export HSA_OVERRIDE_GFX_VERSION=11.0.1" in text
        assert "torch-whisper" in text
    if path.stem == "h200-cuda13":
        assert "libcublas.so.12 NOT found" in text


def test_doctor_cli_machine_option(capsys):
    main(["doctor", "--machine", str(DATA / "strix-halo-gfx1151.json")])
    out = capsys.readouterr().out
    assert "gfx1151-bf16-gemm-hang" in out and "TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL" in out


def test_hard_quirks_are_not_probed():
    items = standard_probes(load_machine(DATA / "strix-halo-gfx1151.json"))
    skipped = [i for i in items if getattr(i, "status", None) == "skipped"]
    assert {(s.component, s.dtype) for s in skipped} == {
        ("matmul", "bfloat16"), ("conv", "float16"), ("conv", "float32"),
    }
    assert all("quirk" in s.message for s in skipped)
    h200 = standard_probes(load_machine(DATA / "h200-cuda13.json"))
    assert {(i.engine, i.device, i.dtype) for i in h200} >= {
        ("ctranslate2", "cuda", "float16"), ("torch", "cuda", "bfloat16"), ("torch", "cpu", "float32")}


def test_doctor_probe_then_cached_reuses_verdicts():
    r = build_report(ENGINES.values(), probe=True, timeout_s=120)
    assert r["probe_mode"] == "run"
    got = {(p["engine"], p["device"]): p["status"] for p in r["probes"]}
    assert got[("torch", "cpu")] == "ok"
    assert got[("ctranslate2", "cpu")] == "ok"
    assert got[("onnxruntime", "cpu")] == "ok"
    again = build_report(ENGINES.values())  # default: cached verdicts, no probing
    assert again["probe_mode"] == "cached"
    assert len(again["probes"]) == len(r["probes"]) and all(p["cached"] for p in again["probes"])
    # the same verdicts, not new runs: each probe keeps the time it was run at
    def stamps(rep: dict) -> list:
        return sorted((p["engine"], p["device"], p["target"], p["at"]) for p in rep["probes"])

    assert stamps(again) == stamps(r) and all(p["at"] for p in again["probes"])
    assert "ok (cached)" in _render(again)
