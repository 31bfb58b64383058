"""OmniVoice engine (``omnivoice``): omnilingual zero-shot TTS with voice cloning and voice design.

OmniVoice (PyPI ``omnivoice``, Apache-2.0, k2-fsa) is a masked-token ("diffusion language model")
TTS: a Qwen3-0.6B transformer with bidirectional attention fills in 8 codebooks of Higgs audio v2
tokens (25 frames/s) over a fixed number of unmasking steps with classifier-free guidance; the
codec decodes them to 24 kHz audio. A voice is cloned from a reference clip *and its transcript*,
or designed from a description ("female, british accent, low pitch"), or left to the model.

voxbox loads the upstream checkpoint directory (``--model-dir``; see ``_load``) and runs its own
forward, sampler and codec code against it (``_backbone``, ``_sampler``, ``_codec``): upstream's
model module imports torchaudio, soundfile, pydub and transformers' torchaudio-only tokenizer, none
of which voxbox needs. Only upstream's pure-Python text helpers are imported (``_upstream``)::

    engine = load("/models/omnivoice", device="cuda")                  # backbone bf16, codec fp32
    engine = load("/models/omnivoice", placement={"backbone": "cuda:float16", "decoder": "cpu"})
    for chunk in engine.stream("Hello there.", voice_description="female, british accent", steps=8):
        ...
    voice = engine.encode_voice(reference_audio, "what the reference clip says")   # cached by SHA-256

Per-call options (``None`` = upstream's default): ``steps`` (32), ``guidance_scale`` (2.0),
``t_shift`` (0.1), ``layer_penalty_factor`` (5.0), ``position_temperature`` (5.0),
``class_temperature`` (0.0 = greedy), ``seed``, ``language`` (id or name), ``voice_description``,
``reference_text`` (transcript of a raw reference clip), ``duration`` (seconds; overrides the length
estimate), ``denoise`` (true), ``postprocess`` (true: silence trimming), ``chunk_seconds`` (15) and
``chunk_threshold`` (30: texts estimated longer are generated in pieces, streamed one by one),
``window_frames``/``first_window_frames`` (decoder windows, used when the clean-up allows it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxbox.engines.placement import resolve_placement
from voxbox.engines.spec import (
    Capabilities,
    EngineSpec,
    LoadRequest,
    Options,
    build_options,
)
from voxbox.errors import BadInputError, ModelNotFoundError
from voxbox.types import ComponentSpec

__all__ = [
    "COMPONENTS", "SPEC", "OmniVoiceEngine", "OmniVoiceLoadOptions", "OmniVoiceOptions", "load", "parse_placement",
]

_LAZY = ("OmniVoiceEngine",)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class OmniVoiceOptions(Options):
    """Per-call options (``None`` = upstream's default); see the module docstring."""

    steps: int | None = None
    guidance_scale: float | None = None
    t_shift: float | None = None
    layer_penalty_factor: float | None = None
    position_temperature: float | None = None
    class_temperature: float | None = None
    seed: int | None = None
    language: str | None = None
    voice_description: str | None = None
    reference_text: str | None = None
    duration: float | None = None
    denoise: bool | None = None
    postprocess: bool | None = None
    chunk_seconds: float | None = None
    chunk_threshold: float | None = None
    window_frames: int | None = None
    first_window_frames: int | None = None

    def check(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= 200:
            raise BadInputError(f"steps must be between 1 and 200, got {self.steps}", param="steps")
        for name in ("guidance_scale", "layer_penalty_factor", "position_temperature", "class_temperature"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0 <= value <= 100):
                raise BadInputError(f"{name} must be between 0 and 100, got {value}", param=name)
        if self.t_shift is not None and not 0 < self.t_shift <= 10:
            raise BadInputError(f"t_shift must be in (0, 10], got {self.t_shift}", param="t_shift")
        if self.duration is not None and not 0 < self.duration <= 600:
            raise BadInputError(f"duration must be in (0, 600] seconds, got {self.duration}", param="duration")
        for name in ("chunk_seconds", "chunk_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 600:
                raise BadInputError(f"{name} must be in (0, 600] seconds, got {value}", param=name)
        for name in ("window_frames", "first_window_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise BadInputError(f"{name} must be positive, got {value}", param=name)
        if self.voice_description is not None and len(self.voice_description) > 500:
            raise BadInputError("voice_description is longer than 500 characters", param="voice_description")


@dataclass(frozen=True)
class OmniVoiceLoadOptions(Options):
    """Load-time options of :func:`load` beyond model/device/dtype/placement."""

    cuda_graphs: bool | None = None
    max_graphs: int | None = None
    max_voices: int | None = None
    window_frames: int | None = None
    first_window_frames: int | None = None
    context_frames: int | None = None
    load_encoder: bool | None = None
    compile_decoder: bool | None = None


COMPONENTS = ("backbone", "decoder", "encoder")
_TORCH_DTYPES = ("bfloat16", "float16", "float32")
# Published OmniVoice sizes: Qwen3-0.6B (+ audio embeddings and heads), the Higgs v2 DAC decoder,
# HuBERT-base + DAC encoder for reference clips.
_SPEC_COMPONENTS = (
    ComponentSpec(
        "backbone", params=612_577_280, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES, backend="torch",
        kind="transformer", overhead_bytes=512 * 2**20,
    ),
    ComponentSpec(
        "decoder", params=22_614_569, devices=("cpu", "cuda", "rocm"), dtypes=("float32", "bfloat16", "float16"),
        backend="torch", kind="vocoder", overhead_bytes=1 * 2**30,
    ),
    ComponentSpec(
        "encoder", params=161_482_176, devices=("cpu", "cuda", "rocm"), dtypes=("float32", "bfloat16", "float16"),
        backend="torch", kind="codec", overhead_bytes=256 * 2**20,
    ),
)


def parse_placement(device: str | None = "auto", dtype: str | None = None,
                    placement: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(device, dtype) per component (see :mod:`voxbox.engines.placement`): "auto" asks the planner
    (e.g. gfx1151: backbone fp16 on the iGPU, codec on the CPU); an explicit device puts every
    component there (backbone bfloat16 on a GPU unless ``dtype``; codec float32)."""
    placed = resolve_placement("omnivoice", _SPEC_COMPONENTS, device=device, dtype=dtype, placement=placement)
    return {comp: (p.device, p.dtype) for comp, p in placed.items()}


def load(model: str | Path | None = None, *, device: str | None = "auto", dtype: str | None = None,
         placement: Mapping[str, Any] | None = None, threads: int | None = None, cuda_graphs: bool = True,
         max_graphs: int = 8, max_voices: int = 32, window_frames: int = 50, first_window_frames: int = 12,
         context_frames: int = 16, load_encoder: bool = False, compile_decoder: bool = False) -> Any:
    """Load OmniVoice from ``model`` (a directory in the upstream layout; see ``_load``).

    ``cuda_graphs`` captures the whole unmasking loop per (prompt, frames, steps) shape on CUDA
    (``max_graphs`` kept); ``load_encoder`` loads the reference-clip encoder now instead of on the
    first clone; ``window_frames``/``first_window_frames``/``context_frames`` size the decoder windows;
    ``compile_decoder`` runs the DAC decoder through ``torch.compile`` (dynamic shapes; CUDA only).
    """
    import torch
    from tokenizers import Tokenizer

    from . import _load
    from ._codec import Codec
    from ._engine import OmniVoiceEngine
    from ._sampler import Sampler

    if threads:
        torch.set_num_threads(int(threads))
    if model is None:
        raise ModelNotFoundError("omnivoice needs a local model directory (--model-dir DIR) in the upstream layout",
                                 param="model")
    files = _load.resolve_files(model)
    places = parse_placement(device, dtype, placement)
    lm = _load.lm_config(files)
    codec_cfg = _load.codec_config(files)
    try:
        tokenizer = Tokenizer.from_file(str(files.tokenizer))
    except Exception as exc:
        from voxbox.errors import ModelLoadError

        raise ModelLoadError(f"cannot read {str(files.tokenizer)!r}: {exc}") from exc
    bdev, bdt = places["backbone"]
    backbone = _load.load_backbone(files, lm, bdev, bdt)
    decoder = _load.load_decoder(files, codec_cfg, *places["decoder"])
    if compile_decoder and places["decoder"][0].type == "cuda":
        decoder.acoustic_decoder = torch.compile(decoder.acoustic_decoder, dynamic=True)  # type: ignore[assignment]
    encoder = _load.load_encoder(files, codec_cfg, *places["encoder"]) if load_encoder else None
    codec = Codec(codec_cfg, decoder, places["decoder"], encoder, places["encoder"])
    sampler = Sampler(backbone, bdev, bdt, cuda_graphs=cuda_graphs, max_graphs=max_graphs)
    return OmniVoiceEngine(files, str(Path(model).expanduser().resolve()), sampler, codec, tokenizer, codec_cfg, places,
                           max_voices=max_voices, first_window=first_window_frames, window=window_frames,
                           context=context_frames)


def _factory(req: LoadRequest) -> Any:
    opts = build_options(OmniVoiceLoadOptions, req.options).given()
    return load(req.model, device=req.device, dtype=req.dtype, placement=req.placement, threads=req.threads, **opts)


SPEC: EngineSpec[Any, OmniVoiceOptions] = EngineSpec(
    name="omnivoice", task="tts", factory=_factory, options=OmniVoiceOptions, load_options=OmniVoiceLoadOptions,
    description="OmniVoice omnilingual TTS: voice cloning and voice design (local weights directory)",
    requires=("torch", "safetensors", "tokenizers", "transformers", "omnivoice"),
    install_hint="pip install 'voxbox[omnivoice]' && pip install --no-deps omnivoice",
    components=_SPEC_COMPONENTS,
    capabilities=Capabilities(streaming=True, cloning=True, voice_design=True),
    aliases=("omnivoice",),
    local_names=("omnivoice", "OmniVoice"),
)
