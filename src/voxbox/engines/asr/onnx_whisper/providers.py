"""Execution providers for onnx-whisper: which ONNX Runtime provider serves a device name, the
hardware planner's choice for ``auto``, and opening the encoder and decoder sessions on it (a
silent fall-back to the CPU is an error)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxbox.errors import (
    BadInputError,
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
)
from voxbox.types import ComponentSpec

__all__ = ["INSTALL_HINT", "PROVIDERS", "open_sessions", "ort", "pick_providers"]

INSTALL_HINT = "pip install 'voxbox[onnx]'"

#: device kind -> ONNX Runtime execution provider, in "auto" preference order.
PROVIDERS: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
    "cpu": "CPUExecutionProvider",
}



def ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineUnavailableError(f"onnx-whisper needs onnxruntime ({exc})", install_hint=INSTALL_HINT) from None
    return ort


def pick_providers(device: str = "auto", available: list[str] | None = None
                   ) -> tuple[str, int, list[str | tuple[str, dict[str, int]]]]:
    """(device kind, device index, provider list for InferenceSession) for ``device``.

    This is the engine's one device seam: when a hardware planner decides the device it passes
    ``device="cuda:0"`` (or ``rocm``/``migraphx``/``cpu``) here.
    """
    avail = list(available if available is not None else ort().get_available_providers())
    dev = (device or "auto").strip().lower()
    kind, _, idx = dev.partition(":")
    index = int(idx) if idx.isdigit() else 0
    if kind == "auto":
        for k in ("cuda", "rocm", "migraphx"):
            if PROVIDERS[k] in avail:
                kind = k
                break
        else:
            kind = "cpu"
    if kind == "rocm" and PROVIDERS["rocm"] not in avail and PROVIDERS["migraphx"] in avail:
        kind = "migraphx"  # onnxruntime >= 1.23 drives AMD GPUs through MIGraphX only
    if kind == "gpu":
        kind = next((k for k in ("cuda", "rocm", "migraphx") if PROVIDERS[k] in avail), "")
        if not kind:
            raise DeviceError(f"no GPU execution provider in this onnxruntime build (available: {', '.join(avail)})")
    if kind not in PROVIDERS:
        raise BadInputError(
            f"unknown device {device!r} for onnx-whisper; use auto, cpu, cuda[:N], rocm[:N] or migraphx[:N]",
            param="device",
        )
    if PROVIDERS[kind] not in avail:
        raise DeviceError(
            f"onnxruntime here has no {PROVIDERS[kind]} (available: {', '.join(avail)}); "
            f"install onnxruntime-gpu (CUDA) or onnxruntime-rocm / onnxruntime-migraphx (AMD)"
        )
    if kind == "cpu":
        return "cpu", 0, ["CPUExecutionProvider"]
    return kind, index, [(PROVIDERS[kind], {"device_id": index}), "CPUExecutionProvider"]


def _resolve_device(device: str, params: int) -> tuple[str, str]:
    """(device, reason): an explicit device is kept; ``auto`` asks the hardware planner
    (:func:`voxbox.engines.placement.auto_device`), which knows which GPUs ONNX Runtime's providers
    can drive; without the planner, ``auto`` stays ``auto`` (first GPU provider, else CPU)."""
    if device not in (None, "", "auto"):
        return device, f"device {device} was requested explicitly"
    try:
        from voxbox.engines.placement import auto_device
    except ImportError:
        return "auto", "no hardware planner; first available execution provider"
    comp = ComponentSpec("whisper", params=params, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                         backend="onnxruntime", kind="transformer", overhead_bytes=300 << 20)
    try:
        dev, _dtype, reason = auto_device("onnx-whisper", comp)
    except Exception as exc:  # noqa: BLE001 - the planner is advisory; ORT's providers decide
        return "auto", f"planner failed ({type(exc).__name__}); first available execution provider"
    return str(dev or "auto"), str(reason)



def open_sessions(model_dir: Path, device: str, threads: int, params: int) -> tuple[Any, Any, str, int, str]:
    """(encoder session, decoder session, device kind, device index, why this device) for the
    graphs in ``model_dir``; raises :class:`DeviceError` when the provider fails or ONNX Runtime
    falls back to another one."""
    rt = ort()
    requested, reason = _resolve_device(device, params)
    try:
        kind, index, providers = pick_providers(requested)
    except DeviceError:
        if device not in (None, "", "auto"):
            raise
        # the planner chose a GPU this onnxruntime build cannot drive: take what it can
        kind, index, providers = pick_providers("auto")
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        reason += f"; {requested} has no execution provider here, using {first}"
    so = rt.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    so.log_severity_level = 3
    try:
        encoder = rt.InferenceSession(str(model_dir / "encoder.onnx"), so, providers=providers)
        decoder = rt.InferenceSession(str(model_dir / "decoder.onnx"), so, providers=providers)
    except Exception as exc:
        msg = " ".join(str(exc).split())
        if kind != "cpu":
            raise DeviceError(f"onnx-whisper could not start on {PROVIDERS[kind]}: {msg}") from exc
        raise ModelLoadError(f"could not load ONNX graphs from {model_dir}: {msg}") from exc
    used = decoder.get_providers()[0]
    if used != PROVIDERS[kind]:
        raise DeviceError(f"onnxruntime fell back to {used} although {PROVIDERS[kind]} was requested")
    return encoder, decoder, kind, index, reason
