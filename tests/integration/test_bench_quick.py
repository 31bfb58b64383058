"""`voxbox bench tts|asr --quick` on the bundled engines: schema-valid JSON with plausible values,
Markdown and PNG charts, and `voxbox bench compare`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voxbox.audio.decode import decode
from voxbox.bench.report import validate_report

pytest.importorskip("jsonschema")
pytest.importorskip("matplotlib")


def _bench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "voxbox.cli", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tts_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench-tts")
    _bench(["tts", "--quick", "--peers", "hibari-upstream", "-o", str(out)])
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def asr_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bench-asr")
    _bench(["asr", "--quick", "-o", str(out)])
    return out, json.loads((out / "results.json").read_text())


def _check_common(report: dict) -> None:
    validate_report(report)
    assert report["quick"] is True
    assert report["machine"]["cpu_count"] >= 1
    assert report["libraries"]["numpy"]
    voxbox_targets = [t for t in report["targets"] if t["kind"] == "voxbox"]
    assert voxbox_targets and all(t["status"] == "ok" for t in voxbox_targets), report["targets"]
    for t in voxbox_targets:
        assert t["load_s"] > 0 and t["first_call_s"] > 0 and t["peak_rss_bytes"] > 10 * 2**20
        assert t["device"] == "cpu" and t["dtype"]
    ok_rows = [r for r in report["rows"] if r["status"] == "ok"]
    assert ok_rows
    for r in ok_rows:
        assert r["runs"]
        for run in r["runs"]:
            assert run["rtf"] > 0 and run["xrt"] > 0 and run["audio_s"] > 0
            assert sum(run["stages"].values()) <= run["total_s"] * 1.001 + 1e-6
        q = r["quality"]
        if q is not None and q["wer"] is not None:
            assert 0.0 <= q["wer"] <= 1.0 and 0.0 <= q["cer"] <= 1.0


def test_quick_tts_report(tts_run: tuple[Path, dict]) -> None:
    out, report = tts_run
    _check_common(report)
    assert report["task"] == "tts"
    engines = {t["name"] for t in report["targets"] if t["kind"] == "voxbox"}
    assert {"hibari", "piper"} <= engines
    vox_rows = [r for r in report["rows"] if r["target"].startswith("voxbox/")]
    for r in vox_rows:
        run = r["runs"][-1]
        assert run["ttfa_s"] is not None and 0 < run["ttfa_s"] <= run["total_s"]
        assert set(run["stages"]) >= {"phonemize", "synthesize"}
        # the saved audio is the last run's output: its decoded length matches the reported seconds
        audio = decode(r["audio_path"])
        assert abs(audio.duration - run["audio_s"]) <= 0.05 * audio.duration
        # round trip through the default ASR engine: a clear short sentence comes back nearly whole
        assert r["quality"]["method"].startswith("round-trip")
        assert r["quality"]["wer"] <= 0.5, r["hypothesis"]
    # the peer row has its ratio to the voxbox row of the same run
    peer = next(r for r in report["rows"] if r["target"] == "hibari-upstream")
    assert peer["time_ratio_to_voxbox"] > 0


def test_quick_asr_report(asr_run: tuple[Path, dict]) -> None:
    out, report = asr_run
    _check_common(report)
    assert report["task"] == "asr"
    assert report["settings"]["decoding"]["beam_size"] >= 1
    clips = report["settings"]["clips"]
    by = {(r["target"], r["scenario"]): r for r in report["rows"]}
    vox = "voxbox/faster-whisper:tiny.en"
    for name, meta in clips.items():
        row = by[(vox, name)]
        assert abs(row["summary"]["audio_s"] - meta["seconds"]) < 0.01
        assert set(row["runs"][0]["stages"]) >= {"encode", "decode"}
        assert row["quality"]["method"] == "reference"
    # human recording (Beckett) transcribed nearly perfectly by tiny.en
    assert by[(vox, "beckett")]["quality"]["wer"] <= 0.2
    raw = by[("faster-whisper-raw:tiny.en", "beckett")]
    assert raw["status"] == "ok" and raw["time_ratio_to_voxbox"] > 0
    # raw faster-whisper measures voxbox's overhead: its runs alternate with voxbox's, each in its own process
    targets = {t["id"]: t for t in report["targets"]}
    assert targets["faster-whisper-raw:tiny.en"]["extra"]["interleaved"] is True
    assert targets[vox]["extra"]["interleaved"] is True
    assert any(t["target"] == vox and t["xrt"] > 0 for t in report["totals"])


@pytest.mark.parametrize("which", ["tts_run", "asr_run"])
def test_markdown_and_png_written(which: str, request: pytest.FixtureRequest) -> None:
    from PIL import Image

    out, report = request.getfixturevalue(which)
    md = (out / "results.md").read_text()
    assert "| scenario |" in md and "voxbox/" in md
    for name in ("rtf.png", "stages.png"):
        p = out / name
        assert p.stat().st_size > 1000
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100


def test_compare_two_results(tts_run: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = tts_run
    b = json.loads(json.dumps(report))
    for r in b["rows"]:
        if r["summary"]["total_s"]:
            r["summary"]["total_s"]["median"] *= 2
    (tmp_path / "b.json").write_text(json.dumps(b))
    proc = _bench(["compare", str(out / "results.json"), str(tmp_path / "b.json")])
    assert "+100.0%" in proc.stdout


def test_compare_refuses_different_tasks_and_names_both_files(tts_run: tuple[Path, dict], asr_run: tuple[Path, dict],
                                                             tmp_path: Path) -> None:
    import subprocess
    import sys

    tts_out, report = tts_run
    asr_out, _ = asr_run
    proc = subprocess.run([sys.executable, "-m", "voxbox.cli", "bench", "compare", str(tts_out / "results.json"),
                           str(asr_out / "results.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "one task" in proc.stderr
    same = tmp_path / "again" / "results.json"
    same.parent.mkdir()
    same.write_text(json.dumps(report))
    proc = _bench(["compare", str(tts_out / "results.json"), str(same)])
    assert str(same) in proc.stdout.replace("\n", "")  # the title tells the two results.json apart


def test_quick_asr_is_one_clip(asr_run: tuple[Path, dict]) -> None:
    _, report = asr_run
    assert list(report["settings"]["clips"]) == ["beckett"]
