"""onnx-whisper: a Whisper exported by ``voxbox convert --to onnx`` on ONNX Runtime.

The model directory holds ``encoder.onnx`` (features -> every decoder layer's cross-attention K/V),
``decoder.onnx`` (tokens + explicit past K/V -> last-token logits + present K/V), ``tokenizer.json``
and ``voxbox_onnx.json`` (dimensions, special ids, suppression lists); see
:mod:`voxbox.convert.onnx_export`.

Decoding is greedy (temperature 0) with openai-whisper's rules: blank and non-speech suppression,
paired, monotonic timestamp tokens, 30-second windows advanced to the last complete timestamp.
Language detection runs the decoder on ``<|startoftranscript|>`` over the language tokens of the
first window. Features, tokens, timestamp rules, the long-form loop and argument checks are the
shared Whisper core's (:mod:`voxbox.engines.asr.whisper`).

Execution provider: ``device="auto"`` takes the first of CUDA, ROCm, MIGraphX that this
onnxruntime build offers, else CPU; ``cuda``/``rocm``/``migraphx``/``cpu`` ask for one and fail
with :class:`DeviceError` if it is missing or ONNX Runtime silently falls back. The choice is
reported in ``EngineInfo.device`` and ``EngineInfo.extra["execution_provider"]``.

Stage timings: ``resample`` (only for non-16 kHz input), ``features`` (numpy log-mel), ``encode``
(encoder graph), ``decode`` (decoder graph steps and language detection).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxbox.engines.asr.onnx_whisper.providers import (
    INSTALL_HINT,
    PROVIDERS,
    ort,
    pick_providers,
)
from voxbox.engines.asr.whisper.validate import check_decoding
from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.errors import BadInputError, ModelNotFoundError, UnsupportedOperationError
from voxbox.types import ComponentSpec

if TYPE_CHECKING:
    from voxbox.engines.asr.onnx_whisper.engine import OnnxWhisperEngine

__all__ = ["PROVIDERS", "SPEC", "OnnxWhisperEngine", "OnnxWhisperOptions", "load", "models", "pick_providers"]


def __getattr__(name: str) -> Any:
    if name == "OnnxWhisperEngine":  # the engine class, without importing it with the spec
        from voxbox.engines.asr.onnx_whisper.engine import OnnxWhisperEngine

        return OnnxWhisperEngine
    raise AttributeError(name)


@dataclass(frozen=True)
class OnnxWhisperOptions(Options):
    """Per-call options. Decoding is greedy: ``temperature`` may only be 0 and ``beam_size`` 1."""

    temperature: tuple[float, ...] | None = None
    beam_size: int | None = None
    without_timestamps: bool | None = None
    max_new_tokens: int | None = None
    suppress_blank: bool | None = None
    suppress_tokens: tuple[int, ...] | None = None

    def check(self) -> None:
        check_decoding(self)
        if self.temperature and self.temperature[0] != 0:
            raise UnsupportedOperationError("onnx-whisper decodes greedily (temperature 0) only", param="temperature")
        if self.beam_size not in (None, 1):
            raise UnsupportedOperationError("onnx-whisper decodes greedily (beam_size 1) only", param="beam_size")


def models() -> list[str]:
    return []


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None,
         threads: int | None = None) -> OnnxWhisperEngine:
    """Load an ONNX Whisper directory made by ``voxbox convert SRC OUT --to onnx``.

    ``device``: auto, cpu, cuda[:N], rocm[:N], migraphx[:N]. ``dtype`` must match the export
    (float32 or int8; it is fixed at conversion time). ``threads``: intra-op threads.
    """
    from voxbox.engines.asr.onnx_whisper.engine import OnnxWhisperEngine

    ort()
    if not model:
        raise ModelNotFoundError(
            "onnx-whisper needs a model directory (make one with `voxbox convert SRC OUT --to onnx`)", param="model"
        )
    model_dir = Path(model).expanduser()
    if not model_dir.is_dir():
        raise ModelNotFoundError(f"onnx-whisper model directory {model_dir} does not exist", param="model")
    engine = OnnxWhisperEngine(model_dir, device=device, threads=threads or _usable_cores())
    if dtype not in (None, "auto", engine.info.dtype):
        raise BadInputError(f"{model_dir} was exported as {engine.info.dtype}; dtype {dtype!r} needs another "
                            "`voxbox convert` (--quantize int8 for int8)", param="dtype")
    return engine


def _usable_cores() -> int:
    """Cores this process may run on (its CPU affinity): ONNX Runtime's intra-op threads."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def _factory(req: LoadRequest) -> OnnxWhisperEngine:
    build_options(Options, req.options)  # no load options beyond the common ones
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads)


SPEC: EngineSpec[OnnxWhisperEngine, OnnxWhisperOptions] = EngineSpec(
    name="onnx-whisper", task="asr", factory=_factory, options=OnnxWhisperOptions,
    description="Whisper exported to ONNX (voxbox convert) on ONNX Runtime execution providers",
    requires=("onnxruntime", "tokenizers"), install_hint=INSTALL_HINT,
    components=(ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                              backend="onnxruntime", kind="transformer", overhead_bytes=300 * 2**20),),
    capabilities=Capabilities(streaming=True, translate=True),
    aliases=("onnx-whisper",),
)
