"""The quirks table: every known problem present with a source, and the matcher."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from voxbox.hardware.detect import load_machine
from voxbox.hardware.quirks import env_recipe, load_quirks, match_quirks, quirk

DATA = Path(__file__).parents[1] / "data" / "machines"
FIXTURES = sorted(p for p in DATA.glob("*.json") if not p.name.endswith(".probes.json"))

REQUIRED = {
    "gfx1151-bf16-gemm-hang", "gfx1151-miopen-conv", "rdna-miopen-conv-workspace", "hsa-override-gfx-version",
    "hsa-sdma-shared-igpu", "rdna-aotriton-sdpa", "ct2-no-rocm", "sm120-missing-kernels", "ct2-cuda13-cublas12",
}


def test_all_issue_quirks_present_with_sources():
    qs = {q.id: q for q in load_quirks()}
    assert REQUIRED <= set(qs)
    for q in qs.values():
        assert q.severity in ("hard", "soft", "info")
        assert len(q.source) > 20 and len(q.remedy) > 20 and q.title


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_matcher_accepts_every_key_on_every_fixture(path):
    m = load_machine(path)
    for g in m.gpus or [None]:
        for dt in ("bfloat16", "float16", "int8"):
            for be in ("torch", "ctranslate2", "onnxruntime"):
                match_quirks(m, g, backend=be, component_kind="autoencoder", dtype=dt)


@pytest.mark.parametrize("arch,value", [("gfx1030", "10.3.0"), ("gfx1100", "11.0.0"), ("gfx1101", "11.0.1")])
def test_hsa_override_values(arch, value):
    m = load_machine(DATA / "radeon-7800xt-gfx1101.json")
    m.gpus[0].arch = arch
    env = {e.name: e for e in env_recipe(m)}
    assert env["HSA_OVERRIDE_GFX_VERSION"].value == value
    assert "hsa-override-gfx-version" in env["HSA_OVERRIDE_GFX_VERSION"].why


def test_gfx1151_bf16_only_for_bf16():
    m = load_machine(DATA / "strix-halo-gfx1151.json")
    g = m.gpus[0]
    ids = lambda **kw: {q.id for q in match_quirks(m, g, **kw)}  # noqa: E731
    assert "gfx1151-bf16-gemm-hang" in ids(backend="torch", component_kind="transformer", dtype="bfloat16")
    assert "gfx1151-bf16-gemm-hang" not in ids(backend="torch", component_kind="transformer", dtype="float16")
    assert "gfx1151-miopen-conv" in ids(backend="torch", component_kind="autoencoder", dtype="float16")
    env = {e.name: e for e in env_recipe(m)}
    assert env["HSA_ENABLE_SDMA"].value == "0" and env["HSA_ENABLE_SDMA"].optional
    assert env["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"].value == "1"
    assert "HSA_OVERRIDE_GFX_VERSION" not in env  # gfx1151 is a supported target of its ROCm build


def test_ct2_cuda13_matches_only_without_cublas12():
    m = load_machine(DATA / "h200-cuda13.json")
    g = m.gpus[0]
    assert quirk("ct2-cuda13-cublas12") in match_quirks(m, g, backend="ctranslate2")
    fixed = copy.deepcopy(m)
    fixed.backends["ctranslate2"].details["libcublas12"] = True
    assert quirk("ct2-cuda13-cublas12") not in match_quirks(fixed, g, backend="ctranslate2")
    cuda12 = load_machine(DATA / "rtx5090-sm120.json")
    assert quirk("ct2-cuda13-cublas12") not in match_quirks(cuda12, cuda12.gpus[0], backend="ctranslate2")


def test_sm120_and_ct2_rocm():
    rtx = load_machine(DATA / "rtx5090-sm120.json")
    assert "sm120-missing-kernels" in {q.id for q in match_quirks(rtx, rtx.gpus[0], partial=True)}
    amd = load_machine(DATA / "radeon-7800xt-gfx1101.json")
    assert "ct2-no-rocm" in {q.id for q in match_quirks(amd, amd.gpus[0], backend="ctranslate2")}
    assert env_recipe(load_machine(DATA / "cpu-2core.json")) == []
