"""torch-whisper: Whisper HF checkpoints in PyTorch with a static KV cache and CUDA graphs.

Modules: ``model`` (encoder, decoder with static cache), ``checkpoint`` (HF directory -> model),
``rules`` (logit rules as graph-safe tensor operations), ``decoding`` (greedy / sampling / beam
search with graph replay; ``beam`` keeps the hypotheses), ``fast`` (the fused, optionally compiled
GPU step), ``batcher`` (continuous batching of windows across requests, driven by the runtime's
scheduler), ``engine`` (the ASR engine). Features, tokens, timestamps, segments and argument checks
are the shared Whisper core's (:mod:`voxbox.engines.asr.whisper`). Importing this package imports
no torch; ``load`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voxbox.engines.asr.whisper.validate import check_decoding
from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.types import ComponentSpec

__all__ = ["SPEC", "TorchWhisperLoadOptions", "TorchWhisperOptions", "load"]


@dataclass(frozen=True)
class TorchWhisperOptions(Options):
    """Per-call options (``None`` = the engine's default, see ``engine.TranscribeOptions``)."""

    beam_size: int | None = None
    best_of: int | None = None
    patience: float | None = None
    length_penalty: float | None = None
    temperature: tuple[float, ...] | None = None
    compression_ratio_threshold: float | None = None
    log_prob_threshold: float | None = None
    no_speech_threshold: float | None = None
    condition_on_previous_text: bool | None = None
    without_timestamps: bool | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    suppress_blank: bool | None = None
    seed: int | None = None

    def check(self) -> None:
        check_decoding(self)


@dataclass(frozen=True)
class TorchWhisperLoadOptions(Options):
    """Load-time options: ``use_graphs`` (CUDA graphs; default on CUDA/ROCm), ``compile``
    (torch.compile the GPU decode step; default CUDA + Triton), ``kernels`` (the Triton batch-1
    decode step; default on NVIDIA compute capability 9.0+, where it beats the compiled step;
    checked against eager at load), and per-call defaults (``max_new_tokens``: tokens per window,
    e.g. for benchmarks)."""

    use_graphs: bool | None = None
    compile: bool | None = None
    kernels: bool | None = None
    batch_size: int | None = None
    beam_size: int | None = None
    max_new_tokens: int | None = None
    without_timestamps: bool | None = None

    def check(self) -> None:
        check_decoding(self)


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, **options: Any) -> Any:
    """Load an HF Whisper checkpoint directory; see :func:`voxbox.engines.asr.torch_whisper.engine.load`."""
    from voxbox.engines.asr.torch_whisper.engine import load as _load

    return _load(model, device=device, dtype=dtype, **options)


def _factory(req: LoadRequest) -> Any:
    opts = build_options(TorchWhisperLoadOptions, req.options)
    if req.threads:
        import torch

        torch.set_num_threads(int(req.threads))
    return load(req.model, device=req.device, dtype=req.dtype, **opts.given())


SPEC: EngineSpec[Any, TorchWhisperOptions] = EngineSpec(
    name="torch-whisper", task="asr", factory=_factory, options=TorchWhisperOptions,
    load_options=TorchWhisperLoadOptions,
    description="Whisper HF checkpoints in PyTorch with static KV cache and CUDA graphs (CUDA, ROCm, CPU)",
    requires=("torch", "safetensors", "tokenizers"), install_hint="pip install 'voxbox[torch]'",
    components=(ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"),
                              dtypes=("float16", "bfloat16", "float32"), backend="torch", kind="transformer",
                              overhead_bytes=500 * 2**20),),
    capabilities=Capabilities(streaming=True, word_timestamps=True, translate=True, batchable=True),
    aliases=("torch-whisper",),
)
