"""Parakeet (``parakeet``): NeMo FastConformer TDT / RNN-T / CTC ASR on ONNX Runtime.

Parakeet-TDT-0.6B (v2 English, v3 25 European languages) tops the Open ASR leaderboard for speed.
voxbox runs its ONNX export in onnx-asr's directory layout (see ``_engine``) with its own NeMo
log-mel front-end, a batched greedy TDT/RNN-T decoder (one decoder/joint call per step for the
whole batch) and word timestamps from the predicted durations::

    engine = load("/models/parakeet-tdt-0.6b-v2", device="cuda")
    segments, info = engine.transcribe(audio, word_timestamps=True, batch_size=64)

Per-call options (:class:`ParakeetOptions`): ``chunk_length`` (most seconds per window, default 60),
``chunk_overlap`` (seconds read on each side of a window, default 2), ``batch_size`` (windows per
encoder/decoder batch; default 4 on the CPU, 32 on a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.errors import BadInputError, ModelNotFoundError
from voxbox.types import ComponentSpec

__all__ = ["SPEC", "ParakeetLoadOptions", "ParakeetOptions", "load"]

INSTALL_HINT = "pip install 'voxbox[onnx]'"


@dataclass(frozen=True)
class ParakeetOptions(Options):
    chunk_length: float | None = None
    chunk_overlap: float | None = None
    batch_size: int | None = None

    def check(self) -> None:
        if self.chunk_length is not None and not 1.0 <= self.chunk_length <= 600.0:
            raise BadInputError(f"chunk_length must be between 1 and 600 seconds, got {self.chunk_length}",
                                param="chunk_length")
        if self.chunk_overlap is not None and not 0.0 <= self.chunk_overlap <= 10.0:
            raise BadInputError(f"chunk_overlap must be between 0 and 10 seconds, got {self.chunk_overlap}",
                                param="chunk_overlap")
        if self.batch_size is not None and not 1 <= self.batch_size <= 1024:
            raise BadInputError(f"batch_size must be between 1 and 1024, got {self.batch_size}", param="batch_size")


@dataclass(frozen=True)
class ParakeetLoadOptions(Options):
    """``quantization``: pick ``encoder-model.<q>.onnx`` ... (e.g. ``int8``) instead of the float graphs."""

    quantization: str | None = None


def load(model: str | Path | None = None, *, device: str = "auto", dtype: str | None = None,
         threads: int | None = None, quantization: str | None = None) -> Any:
    from ._engine import ParakeetEngine

    if model in (None, "", "parakeet", "parakeet-tdt-0.6b"):
        raise ModelNotFoundError("parakeet needs a local model directory in onnx-asr's layout (--model-dir DIR, or "
                                 "a models-dir folder named parakeet-tdt-0.6b)", param="model")
    if dtype not in (None, "auto", "float32", "fp32"):
        raise BadInputError(f"parakeet runs the graphs it is given; dtype {dtype!r} is not converted (use "
                            "quantization=int8 for int8 graphs)", param="dtype")
    return ParakeetEngine(Path(str(model)).expanduser(), device=device or "auto", threads=int(threads or 0),
                          quantization=quantization)


def _factory(req: LoadRequest) -> Any:
    opts = build_options(ParakeetLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, quantization=opts.quantization)


SPEC: EngineSpec[Any, ParakeetOptions] = EngineSpec(
    name="parakeet", task="asr", factory=_factory, options=ParakeetOptions, load_options=ParakeetLoadOptions,
    description="NeMo Parakeet FastConformer TDT/RNN-T/CTC ASR (onnx-asr layout) on ONNX Runtime, batched, "
                "word timestamps",
    requires=("onnxruntime",), install_hint=INSTALL_HINT,
    components=(ComponentSpec("model", params=600_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                              backend="onnxruntime", kind="transformer", overhead_bytes=1 << 30),),
    capabilities=Capabilities(streaming=True, word_timestamps=True, languages=("en",)),
    default_model=None, aliases=("parakeet",),
    local_names=("parakeet-tdt-0.6b", "parakeet", "parakeet-tdt-0.6b-v2", "parakeet-tdt-0.6b-v3", "parakeet-ctc-0.6b"),
)
