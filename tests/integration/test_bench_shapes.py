"""The GPU bench profiles' machinery on the CPU: random weights at (tiny) shapes, forced token counts,
upstream peers on the very same files, each target in its own process, through ``python -m voxbox.bench``.

The GPU profiles (``gpu``, ``gpu-variants``) run the same code with ``random:large-v3`` etc. and
``device: cuda``; here the shapes are tiny so a 2-core machine runs it in well under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voxbox.bench import shapes
from voxbox.bench.peers import PEER_OF, PEERS
from voxbox.bench.scenarios import load_scenarios, profiles
from voxbox.bench.suite import expand_items
from voxbox.errors import BadInputError

pytest.importorskip("torch")
pytest.importorskip("transformers")

TOKENS = 6
SCENARIOS = f"""
defaults: {{runs: 1, warmup: 1, warmup_each: true, device: cpu}}
asr:
  settings: {{language: en}}
  clips:
    window: {{source: synthetic, seconds: 30}}
    windows2: {{source: synthetic, seconds: 60}}
  targets:
    - engine: torch-whisper
      model: "random:tiny"
      options: {{max_new_tokens: {TOKENS}, temperature: [0.0], without_timestamps: true,
                condition_on_previous_text: false, no_speech_threshold: 1.0}}
      sweep:
        - {{label: b1, items: [window], options: {{batch_size: 1}}}}
        - {{label: b2, items: [windows2], options: {{batch_size: 2}}}}
      peers: [transformers-generate, transformers-generate-static]
"""


@pytest.fixture(scope="module")
def whisper_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bench-shapes")
    scen = tmp / "tiny.yaml"
    scen.write_text(SCENARIOS, encoding="utf-8")
    out = tmp / "out"
    env = {**os.environ, "VOXBOX_CACHE_DIR": str(tmp / "cache")}
    proc = subprocess.run([sys.executable, "-m", "voxbox.bench", "asr", "--scenarios", str(scen), "-o", str(out),
                           "--no-charts"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_random_whisper_and_transformers_peers_decode_the_forced_tokens(whisper_run: tuple[Path, dict]) -> None:
    _, report = whisper_run
    targets = {t["name"]: t for t in report["targets"]}
    assert set(targets) == {"torch-whisper", "transformers-generate", "transformers-generate-static"}
    assert all(t["status"] == "ok" for t in targets.values()), [(t["name"], t["reason"]) for t in targets.values()]
    vox = targets["torch-whisper"]
    # the peers loaded the very files voxbox did (random weights written once)
    assert vox["extra"]["random_weights"] == "random:tiny"
    assert targets["transformers-generate"]["extra"]["model_dir"] == vox["extra"]["model_dir"]
    assert targets["transformers-generate-static"]["extra"]["cache"] == "static"
    rows = {(r["target"].split(":")[0], r["variant"]): r for r in report["rows"]}
    for variant, windows in (("b1", 1), ("b2", 2)):
        for name in ("voxbox/torch-whisper", "transformers-generate", "transformers-generate-static"):
            row = rows[(name, variant)]
            assert row["status"] == "ok", row["error"]
            assert row["options"]["batch_size"] == windows
            # end-of-text is suppressed in the checkpoint and the count forced on both sides
            assert [r["details"]["tokens"] for r in row["runs"]] == [TOKENS * windows], (name, variant)


def test_voxbox_target_goes_through_the_runtime(whisper_run: tuple[Path, dict]) -> None:
    _, report = whisper_run
    vox = next(t for t in report["targets"] if t["kind"] == "voxbox")
    # the runtime's hand-off costs are measured at load (a call round trip, a streamed hop)
    assert 0 < vox["extra"]["runtime_call_s"] < 1.0
    assert 0 < vox["extra"]["runtime_chunk_s"] < 1.0
    assert report["settings"]["isolated"] is True
    row = next(r for r in report["rows"] if r["target"] == vox["id"] and r["variant"] == "b1")
    assert set(row["runs"][0]["stages"]) >= {"features", "encode", "decode"}


def test_markdown_compares_peers_with_voxbox(whisper_run: tuple[Path, dict]) -> None:
    out, _ = whisper_run
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "/token" in md and "time vs voxbox" in md
    assert "window [b1]" in md and "windows2 [b2]" in md


@pytest.mark.parametrize("name", ["gpu", "gpu-variants", "cpu-shapes"])
def test_shipped_profiles_name_real_builders_and_peers(name: str) -> None:
    assert name in profiles()
    scen = load_scenarios(name)
    assert scen["defaults"]["device"] in ("cuda", "cpu")
    for task in ("tts", "asr"):
        for t in scen.get(task, {}).get("targets", []):
            if shapes.is_random(t.get("model")):
                shapes.shape_of(t["engine"], t["model"])  # raises for a shape without a builder
            for p in t.get("peers", []):
                assert p in PEERS and PEER_OF[p] == t["engine"], (t["engine"], p)


def test_gpu_profile_sweeps_whisper_batches_on_their_own_clips() -> None:
    scen = load_scenarios("gpu")
    t = next(t for t in scen["asr"]["targets"] if t["model"] == "random:large-v3")
    base = [{"scenario": n} for n in scen["asr"]["clips"]]
    items = expand_items(t, base, [], None)
    got = {(i["scenario"], i["variant"], i["options"]["batch_size"], i["options"]["max_new_tokens"]) for i in items}
    assert got == {("window", "b1", 1, 100), ("windows16", "b16", 16, 100), ("windows64", "b64", 64, 100)}
    assert t["peers"] == ["transformers-generate", "transformers-generate-static"]


def test_unknown_random_shape_names_the_known_ones() -> None:
    with pytest.raises(BadInputError, match="large-v3"):
        shapes.shape_of("torch-whisper", "random:huge")
    with pytest.raises(BadInputError, match="no random-weight builder"):
        shapes.shape_of("piper", "random:real")
