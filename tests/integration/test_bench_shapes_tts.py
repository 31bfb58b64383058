"""The ``gpu`` profile's TTS rows on the CPU at tiny shapes: work forced per call (VoxCPM2 patches,
fish-s2 frames, OmniVoice steps), upstream's own model classes beside voxbox on the very same files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("torch")
# find_spec, not import: upstream imports torchaudio, which the peers stand in for (bench/peers/upstream_tts.py)
_MISSING = [m for m in ("voxcpm", "omnivoice") if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"upstream not installed: {_MISSING}")

PATCHES, FRAMES = 5, 20
SCENARIOS = f"""
defaults: {{runs: 1, warmup: 1, warmup_each: true, device: cpu}}
tts:
  round_trip: null
  targets:
    - {{engine: voxcpm2, model: "random:tiny", steps: [2], steps_option: timesteps, items: [short],
       options: {{seed: 1234, min_len: {PATCHES}, max_len: {PATCHES}}}, peers: [voxcpm2-upstream]}}
    - {{engine: omnivoice, model: "random:tiny", steps: [2], items: [short],
       options: {{voice_description: "female, british accent", seed: 1234}}, peers: [omnivoice-upstream]}}
    - {{engine: fish-s2, model: "random:tiny", items: [short],
       options: {{min_frames: {FRAMES}, max_frames: {FRAMES}, seed: 0}},
       load_options: {{max_context: 512, max_frames: 28}}}}
"""


@pytest.fixture(scope="module")
def tts_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("bench-shapes-tts")
    (tmp / "tts.yaml").write_text(SCENARIOS, encoding="utf-8")
    env = {**os.environ, "VOXBOX_CACHE_DIR": str(tmp / "cache")}
    proc = subprocess.run([sys.executable, "-m", "voxbox.bench", "tts", "--scenarios", str(tmp / "tts.yaml"),
                           "-o", str(tmp / "out"), "--no-charts"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp / "out" / "results.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _rows(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["target"].split(":")[0]: r for r in report["rows"]}


def test_every_target_and_upstream_peer_ran(tts_report: dict[str, Any]) -> None:
    status = {t["id"]: (t["status"], t["reason"]) for t in tts_report["targets"]}
    assert len(status) == 5
    assert all(s == "ok" for s, _ in status.values()), status
    rows = _rows(tts_report)
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    # upstream returns the whole clip at once: its time to first audio is its total
    up = rows["voxcpm2-upstream"]["runs"][0]
    assert up["ttfa_s"] == up["total_s"]


def test_forced_work_is_the_same_on_both_sides(tts_report: dict[str, Any]) -> None:
    rows = _rows(tts_report)
    for engine in ("voxcpm2", "omnivoice"):
        vox, peer = rows[f"voxbox/{engine}"], rows[f"{engine}-upstream"]
        assert vox["options"] == peer["options"]
        assert vox["runs"][0]["audio_s"] == pytest.approx(peer["runs"][0]["audio_s"], abs=1e-3), engine
    # VoxCPM2: min_len = max_len patches of 0.16 s at 48 kHz (tiny shapes keep the patch size)
    assert rows["voxbox/voxcpm2"]["runs"][0]["audio_s"] == pytest.approx(PATCHES * 0.16, abs=1e-3)
    assert rows["voxbox/fish-s2"]["runs"][0]["details"]["frames"] == FRAMES
