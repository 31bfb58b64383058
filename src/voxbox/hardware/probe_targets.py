"""Real probe targets, run in a child process by :mod:`voxbox.hardware.probe`.

Each is ``fn(device, dtype, **kwargs) -> dict`` and reports the device the work really ran on
(``"device"``), the timed work (``"seconds"``) and, for GPU runs, a CPU reference time
(``"cpu_seconds"``) so the parent can tell a GPU result from a silent CPU fallback.
"""

from __future__ import annotations

import base64
import os
import time
import zlib
from pathlib import Path
from typing import Any

# A 64x64 MatMul + Relu ONNX model (opset 13), zlib + base64: no onnx package needed to probe ORT.
_TINY_ONNX = (
    "eNrtyTEKwkAQRuEdibIMUeJ6g5QewSKElEIam4CdgUCKQEQMJN1ewCtJ7uJF3LQewOoNvGL+z9rTx4vuVUaVykmbbsrbsxw6jVVaJ1Ma"
    "XZpucOv7o6+b48uLzW2eSCHV2XsxZn4b40Nmabks/KE5wzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAMwzAM"
    "wzDsP3Y9qIxup7EVZ3VlJZTXYZx+xyJSk2y/ktCKgg=="
)

ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
}


def tiny_onnx_model() -> bytes:
    return zlib.decompress(base64.b64decode(_TINY_ONNX))


def _torch_device(device: str) -> str:
    kind, _, idx = device.partition(":")
    if kind in ("rocm", "hip", "gpu"):
        kind = "cuda"  # ROCm builds of torch use the "cuda" device type
    return f"{kind}:{idx}" if idx else kind


def _sync(torch: Any, dev: Any) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def torch_matmul(device: str, dtype: str | None = "float32", m: int = 1024, n: int = 1024, k: int = 1024,
                 iters: int = 5, cpu_reference: bool = True) -> dict[str, Any]:
    """An (m x k) @ (k x n) product on (device, dtype); checks the output is finite."""
    import torch

    dt = getattr(torch, dtype or "float32")
    dev = torch.device(_torch_device(device))
    a = torch.randn(m, k, device=dev).to(dt)
    b = torch.randn(k, n, device=dev).to(dt)
    c = a @ b  # warm-up (kernel selection, lazy init)
    _sync(torch, dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        c = a @ b
    _sync(torch, dev)
    seconds = (time.perf_counter() - t0) / iters
    if not bool(torch.isfinite(c.float()).all()):
        raise FloatingPointError(f"non-finite values in a {dtype} matmul on {device}")
    out: dict[str, Any] = {"device": str(c.device), "dtype": str(c.dtype).replace("torch.", ""),
                           "seconds": seconds, "tflops": 2 * m * n * k / seconds / 1e12, "shape": [m, k, n]}
    if dev.type != "cpu" and cpu_reference:
        ac, bc = a.float().cpu(), b.float().cpu()
        ac @ bc
        t0 = time.perf_counter()
        ac @ bc
        out["cpu_seconds"] = time.perf_counter() - t0
    return out


def torch_conv(device: str, dtype: str | None = "float32", channels: int = 256, length: int = 8192,
               iters: int = 3, cpu_reference: bool = True) -> dict[str, Any]:
    """A vocoder-like Conv1d + ConvTranspose1d stack (what MIOpen workspace bugs hit)."""
    import torch

    dt = getattr(torch, dtype or "float32")
    dev = torch.device(_torch_device(device))
    net = torch.nn.Sequential(
        torch.nn.Conv1d(channels, channels, 7, padding=3),
        torch.nn.LeakyReLU(0.1),
        torch.nn.ConvTranspose1d(channels, channels // 2, 16, stride=8, padding=4),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Conv1d(channels // 2, 1, 7, padding=3),
    ).to(dev, dt).eval()
    x = torch.randn(1, channels, length // 8, device=dev).to(dt)
    with torch.inference_mode():
        y = net(x)
        _sync(torch, dev)
        t0 = time.perf_counter()
        for _ in range(iters):
            y = net(x)
        _sync(torch, dev)
        seconds = (time.perf_counter() - t0) / iters
        if not bool(torch.isfinite(y.float()).all()):
            raise FloatingPointError(f"non-finite values in a {dtype} conv stack on {device}")
        out: dict[str, Any] = {"device": str(y.device), "dtype": str(y.dtype).replace("torch.", ""),
                               "seconds": seconds}
        if dev.type != "cpu" and cpu_reference:
            netc, xc = net.float().cpu(), x.float().cpu()
            netc(xc)
            t0 = time.perf_counter()
            netc(xc)
            out["cpu_seconds"] = time.perf_counter() - t0
    return out


def _bundled_ct2_model() -> str:
    """The CTranslate2 model CT2 probes run: $VOXBOX_PROBE_CT2_MODEL, else the bundled tiny.en
    speech model (an encoder-decoder: the first GEMM is where a missing cuBLAS shows up)."""
    override = os.environ.get("VOXBOX_PROBE_CT2_MODEL")
    if override:
        return override
    from voxbox.models import bundled

    return str(bundled.whisper_tiny_en_dir())


def ct2_generate(
    device: str, dtype: str | None = None, model_path: str | None = None, tokens: int = 8
) -> dict[str, Any]:
    """The bundled tiny.en on CTranslate2: encode 30 s of features, then greedy-decode a few tokens.

    ``dtype`` is the CT2 compute type ("int8", "float16", "int8_float16"...). The encoder output is
    kept on the device so its ``device`` shows where the work ran; the first matrix product is
    where a missing cuBLAS shows up (counting devices is not enough).
    """
    import ctranslate2
    import numpy as np

    ct_device = "cuda" if device.split(":")[0] in ("cuda", "rocm", "gpu") else "cpu"
    index = int(device.split(":")[1]) if ":" in device else 0
    model = ctranslate2.models.Whisper(model_path or _bundled_ct2_model(), device=ct_device, device_index=index,
                                       compute_type=dtype or "default", intra_threads=0)
    rng = np.random.default_rng(0)
    feats = ctranslate2.StorageView.from_array(rng.standard_normal((1, 80, 3000), dtype=np.float32) * 0.1)
    enc = model.encode(feats, to_cpu=False)
    t0 = time.perf_counter()
    enc = model.encode(feats, to_cpu=False)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = model.generate(enc, [[50257, 50362]], max_length=tokens, beam_size=1)  # <|startoftranscript|><|notimestamps|>
    decode_s = time.perf_counter() - t0
    return {
        "device": str(enc.device),
        "model_device": str(model.device),
        "compute_type": str(model.compute_type),
        "seconds": encode_s + decode_s,
        "encode_s": encode_s,
        "decode_s": decode_s,
        "workload": "tiny.en encode 30 s + 8 tokens"
        if model_path is None and "VOXBOX_PROBE_CT2_MODEL" not in os.environ
        else None,
        "tokens": len(res[0].sequences_ids[0]) if res and res[0].sequences_ids else 0,
    }


def _ggml_run(path: str, use_gpu: bool, gpu_device: int, samples: Any, tokens: int) -> tuple[str, float]:
    """(backend the context took, seconds of a warm run): a 30 s window, ``tokens`` tokens, no fallback."""
    import tempfile

    from pywhispercpp.model import Model

    from voxbox.hardware.ggml import backend_in_use

    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        model = Model(
            path, redirect_whispercpp_logs_to=log.name, context_params={"use_gpu": use_gpu, "gpu_device": gpu_device},
            n_threads=max(1, min(4, os.cpu_count() or 1)), print_progress=False, single_segment=True, max_tokens=tokens,
            temperature_inc=0.0, no_timestamps=True, language="en",
        )
        backend = backend_in_use(Path(log.name).read_text(errors="replace"))
    model.transcribe(samples)  # warm-up
    t0 = time.perf_counter()
    model.transcribe(samples)
    return backend, time.perf_counter() - t0


def ggml_transcribe(device: str, dtype: str | None = None, model_path: str | None = None, gpu_device: int = 0,
                    tokens: int = 8, cpu_reference: bool = True) -> dict[str, Any]:
    """The bundled tiny.en on whisper.cpp: one 30 s window, a few tokens, on ``device``.

    Reports the backend the context really took (its load log: "using Vulkan0 backend" or "no GPU
    found") as the device, and on a GPU also the CPU time of the same work, so a silent CPU
    fallback shows up twice. The workload matches :func:`ct2_generate`'s, so their times compare.
    """
    import numpy as np

    from voxbox.convert.ggml import bundled_ggml

    path = model_path or os.environ.get("VOXBOX_PROBE_GGML_MODEL") or str(bundled_ggml("tiny.en"))
    samples = (np.random.default_rng(0).standard_normal(16000 * 4) * 0.01).astype(np.float32)
    gpu = device.split(":")[0] != "cpu"
    backend, seconds = _ggml_run(path, gpu, gpu_device, samples, tokens)
    out: dict[str, Any] = {"device": "cpu" if backend == "CPU" else f"gpu:{backend}", "backend": backend,
                           "seconds": seconds, "workload": "tiny.en encode 30 s + 8 tokens"}
    if gpu and cpu_reference:
        out["cpu_seconds"] = _ggml_run(path, False, 0, samples, tokens)[1]
    return out


def ort_session(device: str, dtype: str | None = None, provider: str | None = None, iters: int = 20) -> dict[str, Any]:
    """An ONNX Runtime session asking for the device's provider; reports what the session really got."""
    import numpy as np
    import onnxruntime as ort

    kind = device.split(":")[0]
    asked = provider or ORT_PROVIDERS.get(kind, kind)
    providers = [asked] if asked == "CPUExecutionProvider" else [asked, "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(tiny_onnx_model(), sess_options=opts, providers=providers)
    got = list(sess.get_providers())
    x = np.ones((1, 64), np.float32)
    sess.run(None, {"x": x})
    t0 = time.perf_counter()
    for _ in range(iters):
        y = sess.run(None, {"x": x})[0]
    seconds = (time.perf_counter() - t0) / iters
    ran_on = kind if asked in got and kind != "cpu" else "cpu"
    if kind == "cpu":
        ran_on = "cpu"
    return {"device": ran_on, "providers": got, "asked": asked, "seconds": seconds, "checksum": float(y.sum())}
