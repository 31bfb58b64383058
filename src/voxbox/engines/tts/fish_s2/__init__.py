"""Fish Audio S2-Pro engine (``fish-s2``): dual-AR TTS with voice cloning, streamed codec decode.

S2-Pro is a ~4 B "slow" Qwen3-style transformer that makes one step per 21.5 Hz audio frame, a
~0.4 B "fast" transformer that emits the frame's 9 residual codebooks, and a modified DAC that
turns the 10 codes per frame into 44.1 kHz audio. voxbox implements all three itself (``transformer``,
``model``, ``codec``) from the published architecture and loads the upstream checkpoint layout from a local
directory (``loader``); sglang, flashinfer and flash-attn are not needed::

    engine = load("/models/s2-pro", device="cuda")                 # slow/fast bf16, codec fp32
    engine = load("/models/s2-pro", placement={"slow_ar": "cuda:float16", "fast_ar": "cuda:float16",
                                               "codec": "cpu"})   # an iGPU where bf16 hangs
    voice = engine.encode_voice(reference_audio, "what the reference says")  # cached by content hash
    stream = engine.stream("Hello there.", voice=voice, temperature=0.7)
    for chunk in stream: ...
    stream.timings.as_dict()   # prefill, decode, codec (and voice_encode when a clip is passed)
    stream.details             # first_audio_s, frames, ms_per_frame, finish_reason, codes

Per-call options: ``temperature`` (0.8), ``top_p`` (0.8), ``top_k`` (30, at most 64),
``repetition_penalty`` (1.1, over the last 16 frames), ``ras_temperature``/``ras_top_p`` (1.0/0.9:
used when the last 4 frames repeat a token), ``fast_temperature`` (0 = greedy codebooks, as
sglang-omni) and ``fast_top_p``, ``max_frames``, ``min_frames`` (no ``<|im_end|>`` before),
``logit_bias`` ({token id: bias}, semantic tokens and ``<|im_end|>`` only), ``seed``,
``first_window``/``window`` (frames per streamed chunk: 4 then 32), ``context_frames`` (left
context each window is decoded with: 48), ``speaker``.

Generation stops at ``<|im_end|>`` (checked every ``eos_check`` frames; frames after it are
discarded) or at ``max_frames``. ``first_audio_s`` in ``stream.details`` is a point in time
(from the first ``next()`` to the first chunk), not a stage: the stages never overlap and add
up to at most the call's wall time. On its own, one call runs at a time per engine (static
buffers): a stream holds the engine until it is exhausted or closed. When the runtime batches the
model (``capabilities.batchable``; on by default on CUDA), ``engine.batcher()`` (``batcher``,
``batch``) decodes many calls together: each in its own row of a slotted KV cache, joining and
leaving between frames, reference-voice prefixes reused, codec windows decoded together;
``stream()`` then hands its call to the runtime's scheduler and the stages read ``batch_wait``,
``prefill``, ``decode``, ``codec``. Seeded calls are reproducible there whatever shares the batch
(the draw is a hash of seed and frame), but differ from the unbatched path's draws.

Streaming decodes each window of codes with ``context_frames`` of left context. The codec is
causal, so this equals the whole-utterance decode whenever the context covers the codec's
receptive field (the CPU tests check that on a tiny codec); S2-Pro's codec transformer sees
128 frames per layer, so with the default 48 the streamed audio is a close approximation
rather than bit-identical (sglang-omni streams with 20 frames of overlap plus a crossfade).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from voxbox.engines.placement import resolve_placement
from voxbox.engines.spec import Capabilities, EngineSpec, LoadRequest, Options, build_options
from voxbox.errors import BadInputError, ModelLoadError, ModelNotFoundError, VoxboxError
from voxbox.types import ComponentSpec

from .config import S2_CODEC, S2_PRO_CONFIG, CodecConfig, DualARConfig, load_codec_config, load_dual_ar_config

__all__ = ["COMPONENTS", "DEFAULTS", "FishLoadOptions", "FishOptions", "FishS2Engine", "S2_CODEC", "S2_PRO_CONFIG",
           "SPEC", "load", "parse_placement"]

_LAZY = {"DEFAULTS": "prompt", "FishS2Engine": "engine"}  # name -> submodule (they import torch)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class FishOptions(Options):
    """Per-call options (``None`` = sglang-omni's S2-Pro serving default); see the module docstring."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    ras_temperature: float | None = None
    ras_top_p: float | None = None
    fast_temperature: float | None = None
    fast_top_p: float | None = None
    max_frames: int | None = None
    min_frames: int | None = None
    seed: int | None = None
    logit_bias: dict[int, float] | None = None
    first_window: int | None = None
    window: int | None = None
    context_frames: int | None = None
    speaker: int | None = None


@dataclass(frozen=True)
class FishLoadOptions(Options):
    """Load-time options of :func:`load` beyond model/device/dtype/placement."""

    weights: str | None = None
    max_context: int | None = None
    max_frames: int | None = None
    cuda_graphs: bool | None = None
    capture: bool | None = None
    compile: bool | None = None
    seed: int | None = None
    max_voices: int | None = None
    first_window: int | None = None
    window: int | None = None
    context_frames: int | None = None
    eos_check: int | None = None
    codec_overlap: bool | None = None

COMPONENTS = ("slow_ar", "fast_ar", "codec")


def parse_placement(device: Any = "auto", dtype: Any = None,
                    placement: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(device, dtype) per component (see :mod:`voxbox.engines.placement`): "auto" asks the hardware
    planner; an explicit device puts all there (transformers bfloat16 on a GPU unless ``dtype``,
    codec float32); ``placement`` pins components as ``"cuda:float16"``, ``"cpu"``, ``(dev, dtype)``
    or a dict."""
    placed = resolve_placement("fish-s2", SPEC.components, device=device, dtype=dtype, placement=placement)
    out = {comp: (p.device, p.dtype) for comp, p in placed.items()}
    if out["slow_ar"][0] != out["fast_ar"][0] and not (placement and "fast_ar" in placement):
        out["fast_ar"] = (out["slow_ar"][0], out["fast_ar"][1])  # the small one follows the big one
    if out["slow_ar"][0] != out["fast_ar"][0]:
        raise BadInputError("fish-s2: slow_ar and fast_ar must share a device (they exchange state every frame); "
                            "their dtypes may differ", param="placement")
    return out


def load(model: str | Path | None = None, *, device: Any = "auto", dtype: Any = None,
         placement: Mapping[str, Any] | None = None, weights: str = "checkpoint", max_context: int = 4096,
         max_frames: int = 2048, cuda_graphs: bool = True, capture: bool = True, compile: bool | None = None,
         seed: int = 0, **options: Any) -> Any:
    """Load S2-Pro from ``model``, a directory in the upstream layout (see ``loader``).

    ``weights="random"`` builds random weights at the checkpoint's shapes (benchmarks: timing does
    not depend on weight values once the frame count is fixed). ``max_context`` sizes the slow KV
    cache (prompt + frames); ``max_frames`` caps one call. ``cuda_graphs``: capture the slow step
    (one graph per attention span: 256, 512, 768, ... ``max_context``) and the fast loop on CUDA;
    ``capture``: do it at load time rather than on first use. ``compile`` (default: on CUDA):
    ``torch.compile`` the elementwise pieces of a decode step (norms, q/k norm + RoPE, SwiGLU,
    sampler) so each is one kernel inside the graphs; if compiling fails the eager ops are used
    and ``info.extra["compile_error"]`` says why. Options: ``max_voices`` (code
    LRU), ``first_window``, ``window``, ``context_frames``, ``eos_check``, ``codec_overlap`` (batching
    across requests: decode windows on a codec thread beside the decoder steps; default off, see
    ``batcher.py``).
    """
    import torch

    from . import loader
    from .engine import FishS2Engine
    from .model import DualARRunner

    if model is None:
        raise ModelNotFoundError("fish-s2 needs a local model directory (--model-dir DIR) in the upstream layout",
                                 param="model")
    if weights not in ("checkpoint", "random"):
        raise BadInputError("weights must be 'checkpoint' or 'random'", param="weights")
    try:
        files = loader.resolve_files(model, need_weights=weights == "checkpoint")
        cfg: DualARConfig = load_dual_ar_config(files.config)
        codec_cfg: CodecConfig = load_codec_config(files.root)
    except FileNotFoundError as exc:
        raise ModelNotFoundError(f"fish-s2: {exc}", param="model") from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a config that does not parse
        raise ModelLoadError(f"fish-s2: could not read the config in {model}: {exc}") from exc
    place = parse_placement(device, dtype, placement)
    (ar_dev, slow_dt), (_, fast_dt), (codec_dev, codec_dt) = place["slow_ar"], place["fast_ar"], place["codec"]
    if max_frames < 1 or max_context < 16:
        raise BadInputError("max_frames must be >= 1 and max_context >= 16", param="max_frames")
    max_context = min(int(max_context), cfg.text.max_seq_len)
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover
        raise ModelLoadError("fish-s2 needs the 'tokenizers' package") from exc
    try:
        tokenizer = Tokenizer.from_file(str(files.tokenizer))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a corrupt file
        raise ModelLoadError(f"fish-s2: could not load {files.tokenizer}: {exc}") from exc
    import time

    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        if weights == "random":
            slow, fast = loader.random_dual_ar(cfg, device=ar_dev, slow_dtype=slow_dt, fast_dtype=fast_dt, seed=seed)
            codec = loader.random_codec(codec_cfg, device=codec_dev, dtype=codec_dt, seed=seed)
        else:
            slow, fast = loader.load_dual_ar(files, cfg, device=ar_dev, slow_dtype=slow_dt, fast_dtype=fast_dt)
            codec = loader.load_codec(files, codec_cfg, device=codec_dev, dtype=codec_dt)
    except (KeyError, ValueError, OSError, RuntimeError, EOFError) as exc:
        raise ModelLoadError(f"fish-s2: could not load {files.root}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - safetensors / unpickling errors of a corrupt file
        if isinstance(exc, VoxboxError):
            raise
        raise ModelLoadError(f"fish-s2: could not load {files.root}: {type(exc).__name__}: {exc}") from exc
    stages["weights"] = time.perf_counter() - t0
    params = {"slow_ar": sum(p.numel() for p in slow.parameters()),
              "fast_ar": sum(p.numel() for p in fast.parameters()),
              "codec": sum(p.numel() for p in codec.parameters())}
    runner = DualARRunner(cfg, slow, fast, device=ar_dev, max_context=max_context,
                          max_frames=min(int(max_frames), max_context - 1), cuda_graphs=cuda_graphs,
                          compile=(ar_dev.type == "cuda") if compile is None else bool(compile))
    if ar_dev.type == "cuda":
        # The full vocabulary's output rows are not needed once the reduced head exists.
        torch.cuda.empty_cache()
    stages["runner"] = time.perf_counter() - t0 - stages["weights"]
    if capture and runner.use_graphs:
        runner.capture_all()  # compiles the step's elementwise pieces (or loads them from the cache)
    stages["capture"] = time.perf_counter() - t0 - stages["weights"] - stages["runner"]
    engine = FishS2Engine(cfg, runner, codec, tokenizer, model_id=str(files.root), placement=place, params=params,
                          random_weights=weights == "random", **options)
    engine.info.extra["load_stages_s"] = {k: round(v, 3) for k, v in stages.items()}
    return engine


def _factory(req: LoadRequest) -> Any:
    opts = build_options(FishLoadOptions, req.options).given()
    if req.threads:
        import torch

        torch.set_num_threads(int(req.threads))
    return load(req.model, device=req.device, dtype=req.dtype, placement=req.placement, **opts)


_TORCH_DTYPES = ("bfloat16", "float16", "float32")
SPEC: EngineSpec[Any, FishOptions] = EngineSpec(
    name="fish-s2", task="tts", factory=_factory, options=FishOptions, load_options=FishLoadOptions,
    description="Fish Audio S2-Pro dual-AR TTS with cached reference codes (local weights directory)",
    requires=("torch", "safetensors", "tokenizers"), install_hint="pip install 'voxbox[torch]'",
    # S2-Pro sizes (approximate): 4B slow AR, 0.4B fast AR, DAC-style codec.
    components=(
        ComponentSpec("slow_ar", params=4_000_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES,
                      backend="torch", kind="transformer", overhead_bytes=2 * 2**30),
        ComponentSpec("fast_ar", params=400_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TORCH_DTYPES,
                      backend="torch", kind="transformer", overhead_bytes=256 * 2**20),
        ComponentSpec("codec", params=200_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("float32", "bfloat16", "float16"), backend="torch", kind="codec",
                      overhead_bytes=1 * 2**30),
    ),
    capabilities=Capabilities(streaming=True, cloning=True, batchable=True),
    aliases=("fish-s2",),
)
