"""Planner decisions from recorded machine descriptions (tests/data/machines/*.json)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest

from voxbox.engines.placement import auto_device
from voxbox.engines.registry import ENGINES
from voxbox.hardware.detect import GiB, load_machine
from voxbox.hardware.machine_plan import choose_plan
from voxbox.hardware.machine_plan import plan_machine as _plan_machine
from voxbox.hardware.memory import bytes_for, headroom
from voxbox.hardware.planner import plan
from voxbox.hardware.probe import ProbeResult
from voxbox.types import ComponentSpec

DATA = Path(__file__).parents[1] / "data" / "machines"
FIXTURES = sorted(p for p in DATA.glob("*.json") if not p.name.endswith(".probes.json"))
ECHO = ENGINES["echo-tts"].components


def plan_engine(label, components, machine, probes=None, pins=None):
    return plan(components, machine, probes, pins, label=label)


def plan_machine(machine, probes=None):
    return _plan_machine(ENGINES.values(), machine, probes)


def plan_asr(machine, probes=None):
    """The ASR choice among the registry's ASR engines, as doctor makes it."""
    cands = [plan(s.components, machine, probes, label=s.name) for s in ENGINES.values() if s.task == "asr"]
    return choose_plan("asr", cands, machine)


def machine(name):
    return load_machine(DATA / f"{name}.json")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path / "cache"))


def test_strix_halo_echo_hybrid_placement_cites_quirks():
    plan = plan_engine("echo-tts", ECHO, machine("strix-halo-gfx1151"))
    dit, ae, te = plan["dit"], plan["autoencoder"], plan["text_encoder"]
    assert (dit.device, dit.dtype, dit.device_kind) == ("cuda", "float16", "rocm")
    assert "gfx1151-bf16-gemm-hang" in dit.reason and "gfx1151-bf16-gemm-hang" in dit.quirks
    assert ae.device == "cpu"
    assert "gfx1151-miopen-conv" in ae.reason
    assert (te.device, te.dtype) == ("cuda", "float16")
    names = {e.name: e.value for e in plan.env}
    assert names["TORCH_ROCM_AOTRITON_ENABLE_EXPERIMENTAL"] == "1"
    assert plan.attention == "sdpa"
    for p in plan.placements:  # one sentence each
        assert p.reason.endswith(".") and p.reason.count(". ") == 0


def test_rtx5090_all_on_gpu_bf16():
    m = machine("rtx5090-sm120")
    plan = plan_engine("echo-tts", ECHO, m)
    # each component in the first dtype its spec declares (the autoencoder: float32, as upstream runs it)
    assert [(p.device, p.dtype) for p in plan.placements] == [("cuda", c.dtypes[0]) for c in ECHO]
    assert plan.attention == "sdpa" and any("sm120-missing-kernels" in n for n in plan.notes)
    asr, _ = plan_asr(m)
    assert asr.engine == "faster-whisper" and (asr.device, asr.dtype) == ("cuda", "float16")


def test_radeon_7800xt_env_and_torch_asr():
    m = machine("radeon-7800xt-gfx1101")
    mp = plan_machine(m)
    env = {e.name: e.value for e in mp.env}
    assert env["HSA_OVERRIDE_GFX_VERSION"] == "11.0.1"
    engine, reason = mp.asr
    assert engine == "torch-whisper"
    assert "ct2-no-rocm" in reason
    tw = mp.plans["torch-whisper"].main
    assert tw.device == "cuda" and tw.device_kind == "rocm" and tw.dtype == "float16"
    fw = mp.plans["faster-whisper"].main
    assert fw.device == "cpu" and "ct2-no-rocm" in fw.quirks
    assert "HSA_OVERRIDE_GFX_VERSION" in {e.name for e in mp.plans["torch-whisper"].env}


def test_two_core_box_cpu_int8_asr_and_cpu_tts():
    m = machine("cpu-2core")
    mp = plan_machine(m)
    assert mp.asr[0] == "faster-whisper"
    fw = mp.plans["faster-whisper"].main
    assert (fw.device, fw.dtype) == ("cpu", "int8")
    for tts in ("piper", "hibari"):
        assert mp.plans[tts].main.device == "cpu"
    echo = mp.plans["echo-tts"]
    assert not echo["dit"].placed  # 2.4B params in float32 do not fit in 8 GB
    assert any("dit was not planned" in w for w in mp.warnings)
    assert any("No GPU" in w for w in mp.warnings)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
@pytest.mark.parametrize("params", [10**8, 2 * 10**9, 8 * 10**9, 15 * 10**9, 40 * 10**9])
def test_never_planned_where_it_does_not_fit(path, params):
    m = load_machine(path)
    spec = ComponentSpec(
        "big", params=params, devices=("cpu", "cuda", "rocm"), dtypes=("bfloat16", "float16", "float32"),
        backend="torch", overhead_bytes=GiB,
    )
    p = plan_engine("big", [spec], m).placements[0]
    if not p.placed:
        assert "does not fit" in p.reason
        return
    need = bytes_for(spec, p.dtype)
    if p.gpu is not None:
        g = m.gpu(p.gpu)
        assert need <= g.free_memory - headroom(g.total_memory)
    else:
        assert need <= m.ram_available - headroom(m.ram_total)


def test_component_too_big_for_gpu_goes_to_cpu_and_budget_is_shared():
    m = machine("rtx5090-sm120")  # 32 GB card (~29.7 GB usable), 58 GB RAM available
    huge = ComponentSpec("huge", params=16 * 10**9, devices=("cpu", "cuda"), dtypes=("bfloat16", "float32"))
    p = plan_engine("x", [huge], m)["huge"]  # 32 GB in bf16: not on the card; 64 GB in fp32: not in RAM
    assert not p.placed and "does not fit" in p.reason
    a = ComponentSpec("a", params=10 * 10**9, devices=("cpu", "cuda"), dtypes=("bfloat16", "float32"))
    b = ComponentSpec("b", params=10 * 10**9, devices=("cpu", "cuda"), dtypes=("bfloat16", "float32"))
    plan = plan_engine("x", [a, b], m)  # 20 GB each: only one fits on the card
    assert sorted(p.device for p in plan.placements) == ["cpu", "cuda"]
    on_cpu = next(p for p in plan.placements if p.device == "cpu")
    assert "does not fit" in on_cpu.reason and on_cpu.dtype == "float32"


def test_pins_win_with_warnings():
    m = machine("strix-halo-gfx1151")
    plan = plan_engine("echo-tts", ECHO, m, pins={"components": {"dit": {"dtype": "bfloat16"}}})
    dit = plan["dit"]
    assert dit.pinned and (dit.device, dit.dtype) == ("cuda", "bfloat16")
    assert any("gfx1151-bf16-gemm-hang" in w for w in plan.warnings)
    allcpu = plan_engine("echo-tts", ECHO, m, pins={"device": "cpu"})
    assert {p.device for p in allcpu.placements} == {"cpu"} and not allcpu.warnings
    nogpu = plan_engine("echo-tts", ECHO, machine("rtx5090-sm120"), pins={"device": "cuda", "dtype": "float16"})
    assert {(p.device, p.dtype) for p in nogpu.placements} == {("cuda", "float16")}


def _probe(status, engine, component, device, dtype, seconds=None, message=None):
    return ProbeResult(status=status, target=f"voxbox.hardware.probe_targets:{component}", device=device, dtype=dtype,
                       engine=engine, component=component, seconds=seconds, message=message)


def test_failed_probe_excludes_option_and_pin_against_it_warns():
    m = machine("rtx5090-sm120")
    probes = [_probe("hang", "torch", "matmul", "cuda", "bfloat16", message="no answer within 60 s")]
    plan = plan_engine("echo-tts", ECHO, m, probes)
    assert (plan["dit"].device, plan["dit"].dtype) == ("cuda", "float16")
    assert "hang" in plan["dit"].reason
    pinned = plan_engine("echo-tts", ECHO, m, probes, pins={"dtype": "bfloat16"})
    assert pinned["dit"].dtype == "bfloat16" and any("hang" in w for w in pinned.warnings)


def test_fastest_probed_option_wins():
    m = machine("rtx5090-sm120")
    spec = ComponentSpec("enc", params=10**8, devices=("cpu", "cuda"), dtypes=("float16", "bfloat16", "float32"))
    probes = [_probe("ok", "torch", "matmul", "cuda", "float16", 0.010),
              _probe("ok", "torch", "matmul", "cuda", "bfloat16", 0.004)]
    p = plan_engine("x", [spec], m, probes)["enc"]
    assert p.dtype == "bfloat16" and "fastest probed" in p.reason


def test_recorded_h200_echo_autoencoder_stays_float32_unless_pinned():
    """On the recorded H200 the fp16 matmul probe beats fp32 by 16 %; the autoencoder still runs in
    float32 (its spec's auto_dtypes, as upstream and the benchmarks run it); a pin gets fp16."""
    m = machine("h200-cuda13")
    probes = [ProbeResult.from_dict(d) for d in json.loads((DATA / "h200-cuda13.probes.json").read_text())["probes"]]
    plan = plan_engine("echo-tts", ECHO, m, probes)
    assert (plan["autoencoder"].device, plan["autoencoder"].dtype) == ("cuda", "float32")
    assert plan["dit"].dtype == "bfloat16"
    pinned = plan_engine("echo-tts", ECHO, m, probes, pins={"components": {"autoencoder": {"dtype": "float16"}}})
    assert pinned["autoencoder"].dtype == "float16"
    # a spec without auto_dtypes takes the clearly faster probed dtype
    free = [replace(c, auto_dtypes=None) for c in ECHO]
    assert plan_engine("echo-tts", free, m, probes)["autoencoder"].dtype == "float16"


def test_recorded_h200_ct2_cuda13_goes_to_torch_engine():
    m = machine("h200-cuda13")
    probes = [ProbeResult.from_dict(d) for d in json.loads((DATA / "h200-cuda13.probes.json").read_text())["probes"]]
    mp = plan_machine(m, probes)
    assert mp.asr[0] == "torch-whisper" and "ct2-cuda13-cublas12" in mp.asr[1]
    assert mp.plans["faster-whisper"].main.device == "cpu"
    assert any("libcublas.so.12" in w for w in mp.warnings)
    # with the CUDA 12 cuBLAS installed and a passing probe, CT2 gets the GPU back
    fixed = copy.deepcopy(m)
    fixed.backends["ctranslate2"].details["libcublas12"] = True
    ok = [_probe("ok", "ctranslate2", "generate", "cuda", "float16", 0.003)]
    asr, _ = plan_asr(fixed, ok)
    assert asr.engine == "faster-whisper" and (asr.device, asr.dtype) == ("cuda", "float16")
    # a passing probe also lifts the soft quirk (the user fixed LD_LIBRARY_PATH)
    asr2, _ = plan_asr(m, ok)
    assert asr2.engine == "faster-whisper" and asr2.device == "cuda" and "ct2-cuda13-cublas12" in asr2.main.quirks


def _auto(engine, machine_name, **kw):
    return auto_device(engine, ENGINES[engine].components[0], machine=machine(machine_name), **kw)[:2]


def test_auto_device_for_registered_engines():
    assert _auto("piper", "cpu-2core") == ("cpu", "float32")
    assert _auto("hibari", "cpu-2core") == ("cpu", "int8")  # the int8 voice the spec declares
    # CT2 reporting a CUDA device is not enough: without a passing probe, CPU int8
    assert _auto("faster-whisper", "rtx5090-sm120", verify=False) == ("cpu", "int8")
    assert _auto("faster-whisper", "cpu-2core") == ("cpu", "int8")
    assert _auto("torch-whisper", "strix-halo-gfx1151") == ("cuda", "float16")
    # ONNX Runtime engines (onnx-whisper) follow the providers ORT really has
    assert _auto("onnx-whisper", "rtx5090-sm120") == ("cuda", "float32")
    assert _auto("onnx-whisper", "radeon-7800xt-gfx1101") == ("cpu", "float32")
    # a voice that is faster than real time on one core stays there unless pinned
    assert _auto("piper", "rtx5090-sm120") == ("cpu", "float32")
    pinned = plan_engine("piper", ENGINES["piper"].components, machine("rtx5090-sm120"), pins={"device": "cuda"})
    assert pinned.main.device == "cuda" and not pinned.warnings


def test_auto_device_trusts_a_passing_ct2_probe(monkeypatch, tmp_path):
    from voxbox.hardware.probe import ProbeCache, ProbeSpec

    m = machine("rtx5090-sm120")
    spec = ProbeSpec("voxbox.hardware.probe_targets:ct2_generate", "cuda", "float16", engine="ctranslate2",
                     component="generate")
    ProbeCache().put(m.fingerprint_key(), spec, _probe("ok", "ctranslate2", "generate", "cuda", "float16", 0.003))
    dev, dt, why = auto_device("faster-whisper", ENGINES["faster-whisper"].components[0], machine=m, verify=False)
    assert (dev, dt) == ("cuda", "float16") and "probe ok" in why


def test_auto_device_explicit_and_quirks():
    fw = ENGINES["faster-whisper"].components[0]
    dev, dt, why = auto_device("faster-whisper", fw, "cpu")
    assert (dev, dt) == ("cpu", "int8") and "requested" in why
    comp = ComponentSpec("dit", params=10**9, devices=("cpu", "cuda"), dtypes=("bfloat16", "float16"), backend="torch")
    dev, dt, why = auto_device("x", comp, "auto", machine=machine("strix-halo-gfx1151"))
    assert (dev, dt) == ("cuda", "float16") and "gfx1151-bf16-gemm-hang" in why


def test_hardware_names_no_engine():
    import voxbox.hardware as hw

    root = Path(hw.__file__).parent
    text = "\n".join(p.read_text() for p in sorted(root.iterdir()) if p.suffix in (".py", ".yaml"))
    for spec in ENGINES.values():
        for name in {spec.name, *spec.aliases} - {"whisper-1", "tts-1", "tts-1-hd"}:
            assert name not in text, name


def test_pins_from_flags_and_settings():
    from voxbox.hardware.pins import pins_from

    assert pins_from("auto", None) == {}
    pins = pins_from("cuda", "float16", {"autoencoder": "cpu"})
    assert pins == {"device": "cuda", "dtype": "float16", "components": {"autoencoder": {"device": "cpu"}}}
    plan = plan_engine("echo-tts", ECHO, machine("rtx5090-sm120"), pins=pins)
    assert plan["autoencoder"].device == "cpu" and plan["dit"].dtype == "float16"
