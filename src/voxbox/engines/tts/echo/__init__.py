"""Echo-TTS engine (``echo-tts``): diffusion TTS with voice cloning, on the upstream model classes.

Echo-TTS (PyPI ``echo-tts``, Apache-2.0) is a diffusion transformer (EchoDiT: byte-level text
encoder, speaker encoder over a reference clip's latent, 24-layer joint-attention DiT) that
denoises a latent with Euler steps and classifier-free guidance, decoded to 44.1 kHz audio by the
Fish S1-DAC autoencoder through a PCA. voxbox loads the upstream classes from a local directory
(see ``_load``), never from the hub, and runs them with its own sampler (``_dit``) and streamed
decoder (``_codec``)::

    engine = load("/models/echo", device="cuda")                     # DiT bf16, autoencoder fp32
    engine = load("/models/echo", placement={"dit": "cuda:float16",  # an iGPU where bf16 hangs
                                             "autoencoder": "cpu:float32"})
    voice = engine.encode_voice(reference_audio)                       # cached by content hash
    for chunk in engine.stream("Hello there.", voice=voice, preset="fast"):
        ...

Per-call options: ``preset`` (``default`` = upstream's 40 steps, ``balanced`` 20, ``fast`` 10, and
upstream's named presets), ``steps``, ``cfg_scale_text``, ``cfg_scale_speaker``, ``cfg_min_t``,
``cfg_max_t``, ``truncation_factor``, ``rescale_k``, ``rescale_sigma``, ``seed``,
``sequence_length`` (default: a bucket of 160/320/480/640 from the text length; 640 is upstream's
fixed length), ``chunk_frames``/``max_chunk_frames`` (streamed decode chunk sizes, latent frames of
2048 samples), ``trim`` (cut at the end of speech as upstream does; default true).

When the runtime batches the model (``capabilities.batchable``; on by default on CUDA),
``engine.batcher()`` (``_batch``, ``_bdit``) samples many calls together, each at its own
diffusion step with its own guidance and voice (requests of one length bucket share a forward),
and decodes the calls that finish on the same step as one batch; the audio equals the unbatched
path's up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from voxbox.engines.placement import resolve_placement
from voxbox.engines.spec import Capabilities, EngineSpec, LoadRequest, Options, build_options
from voxbox.errors import BadInputError, ModelNotFoundError
from voxbox.types import ComponentSpec

__all__ = ["COMPONENTS", "EchoEngine", "EchoLoadOptions", "EchoOptions", "PRESETS", "SEQ_BUCKETS", "SPEC", "load",
           "parse_placement", "sequence_bucket", "tokenize"]

#: Heavy names (torch) re-exported lazily from ``_engine``.
_LAZY = ("EchoEngine", "PRESETS", "SEQ_BUCKETS", "sequence_bucket", "tokenize")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class EchoOptions(Options):
    """Per-call options (``None`` = the preset's value); see the module docstring."""

    preset: str | None = None
    steps: int | None = None
    cfg_scale_text: float | None = None
    cfg_scale_speaker: float | None = None
    cfg_min_t: float | None = None
    cfg_max_t: float | None = None
    truncation_factor: float | None = None
    rescale_k: float | None = None
    rescale_sigma: float | None = None
    seed: int | None = None
    sequence_length: int | None = None
    chunk_frames: int | None = None
    max_chunk_frames: int | None = None
    trim: bool | None = None

    def check(self) -> None:
        if self.steps is not None and not 1 <= self.steps <= 200:
            raise BadInputError(f"steps must be between 1 and 200, got {self.steps}", param="steps")


@dataclass(frozen=True)
class EchoLoadOptions(Options):
    """Load-time options of :func:`load` beyond model/device/dtype/placement."""

    preset: str | None = None
    cuda_graphs: bool | None = None
    compile: bool | None = None
    max_voices: int | None = None
    max_shapes: int | None = None
    chunk_frames: int | None = None
    max_chunk_frames: int | None = None
    snake: str | None = None
    echo_path: str | None = None
    ae_path: str | None = None
    pca_file: str | None = None

COMPONENTS = ("text_encoder", "speaker_encoder", "dit", "autoencoder")


def parse_placement(device: str | None = "auto", dtype: str | None = None,
                    placement: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(device, dtype) per component (see :mod:`voxbox.engines.placement`): "auto" asks the hardware
    planner (e.g. on a gfx1151 iGPU: DiT fp16 on the GPU, autoencoder on the CPU); an explicit device
    puts every component there (transformers bfloat16 on a GPU unless ``dtype``, autoencoder float32,
    upstream's choice); ``placement`` pins components as ``"cuda:float16"``, ``"cpu"``,
    ``("cpu", "float32")`` or ``{"device": ..., "dtype": ...}``."""
    placed = resolve_placement("echo-tts", SPEC.components, device=device, dtype=dtype, placement=placement,
                               follows={"speaker_encoder": "text_encoder"})
    return {comp: (p.device, p.dtype) for comp, p in placed.items()}


def load(model: str | Path | None = None, *, device: str | None = "auto", dtype: str | None = None,
         placement: Mapping[str, Any] | None = None, echo_path: str = "echo-tts-base",
         ae_path: str = "fish-s1-dac-min", pca_file: str = "pca_state.safetensors", **options: Any) -> Any:
    """Load Echo-TTS from ``model`` (a directory in the upstream layout; see ``_load``).

    Options: ``threads`` (CPU threads for torch), ``preset`` (the default per-call preset), ``cuda_graphs``
    (default true; CUDA only), ``compile`` (torch.compile the DiT block before graph capture; default: on
    for CUDA with Triton, off elsewhere), ``max_voices``
    (speaker-latent LRU size), ``max_shapes`` (DiT buckets kept captured), ``chunk_frames``,
    ``max_chunk_frames``, ``snake`` (how the decoder runs Snake: ``auto``, the default = the fused
    walk of ``_fastdec``, Triton on CUDA, torch elsewhere; ``triton``; ``torch``; or upstream's
    module forward with ``script`` = upstream's TorchScript, ``compile`` or ``eager``).
    """
    from ._engine import EchoEngine
    from ._load import resolve_files

    threads = options.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if model is None:
        raise ModelNotFoundError(
            "echo-tts needs a local model directory (--model-dir DIR) in the upstream layout", param="model"
        )
    files = resolve_files(model, echo_path=echo_path, ae_path=ae_path, pca_file=pca_file)
    return EchoEngine(
        files, str(Path(model).expanduser().resolve()), parse_placement(device, dtype, placement), **options
    )


def _factory(req: LoadRequest) -> Any:
    opts = build_options(EchoLoadOptions, req.options).given()
    if req.threads:
        opts["threads"] = req.threads
    return load(req.model, device=req.device, dtype=req.dtype, placement=req.placement, **opts)


_TORCH_DTYPES = ("bfloat16", "float16", "float32")
SPEC: EngineSpec[Any, EchoOptions] = EngineSpec(
    name="echo-tts", task="tts", factory=_factory, options=EchoOptions, load_options=EchoLoadOptions,
    description="Echo-TTS diffusion TTS with voice cloning (local weights directory)",
    requires=("torch", "safetensors", "echo_tts"), install_hint="pip install 'voxbox[echo]'",
    # Echo-TTS-like sizes (approximate): text encoder, 2.4B diffusion transformer, conv autoencoder.
    components=(
        ComponentSpec("text_encoder", params=120_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES,
                      backend="torch", kind="transformer", overhead_bytes=256 * 2**20),
        ComponentSpec("speaker_encoder", params=120_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES,
                      backend="torch", kind="transformer", overhead_bytes=128 * 2**20),
        ComponentSpec("dit", params=2_400_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES,
                      backend="torch", kind="transformer", overhead_bytes=2 * 2**30),
        # float32 unless pinned: upstream and the benchmarks run it so (a faster half-precision
        # matmul probe says nothing of a conv decoder's audio quality)
        ComponentSpec("autoencoder", params=110_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("float32", "bfloat16", "float16"), backend="torch", kind="autoencoder",
                      overhead_bytes=1 * 2**30, auto_dtypes=("float32",)),
    ),
    capabilities=Capabilities(streaming=True, cloning=True, languages=("en",), batchable=True),
    aliases=("echo-tts",),
)
