"""auto_plan: what GPU engines follow for device "auto", from recorded machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxbox.engines.placement import auto_plan
from voxbox.engines.registry import ENGINES
from voxbox.hardware.detect import load_machine

MACHINES = Path(__file__).resolve().parents[1] / "data" / "machines"


def _placements(engine: str, machine: str) -> dict[str, tuple[str, str]]:
    plan = auto_plan(engine, ENGINES[engine].components, machine=load_machine(MACHINES / f"{machine}.json"))
    return {p.component: (p.device, p.dtype) for p in plan.placements}


@pytest.mark.parametrize(
    "engine,big,small_on_cpu", [("echo-tts", "dit", "autoencoder"), ("fish-s2", "slow_ar", "codec")]
)
def test_strix_halo_hybrid_fp16(engine: str, big: str, small_on_cpu: str) -> None:
    placed = _placements(engine, "strix-halo-gfx1151")
    assert placed[big] == ("cuda", "float16")  # bf16 hangs gfx1151
    assert placed[small_on_cpu][0] == "cpu"  # MIOpen conv workspace quirk


def test_cpu_box_everything_on_cpu_fp32() -> None:
    for engine in ("echo-tts", "fish-s2", "torch-whisper"):
        placed = _placements(engine, "cpu-2core")
        assert set(placed.values()) == {("cpu", "float32")}, (engine, placed)


def test_rtx5090_keeps_transformers_on_gpu_bf16() -> None:
    placed = _placements("fish-s2", "rtx5090-sm120")
    assert placed["slow_ar"] == ("cuda", "bfloat16") and placed["fast_ar"] == ("cuda", "bfloat16")
    assert placed["codec"][0] == "cuda"


def test_reasons_are_sentences() -> None:
    plan = auto_plan(
        "echo-tts", ENGINES["echo-tts"].components, machine=load_machine(MACHINES / "strix-halo-gfx1151.json")
    )
    for p in plan.placements:
        assert p.reason and p.reason.endswith("."), p
