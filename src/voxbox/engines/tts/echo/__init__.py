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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from voxbox.errors import BadInputError, ModelNotFoundError

from ._engine import PRESETS, SEQ_BUCKETS, EchoEngine, sequence_bucket, tokenize

__all__ = ["COMPONENTS", "EchoEngine", "PRESETS", "SEQ_BUCKETS", "load", "parse_placement", "sequence_bucket", "tokenize"]

COMPONENTS = ("text_encoder", "speaker_encoder", "dit", "autoencoder")
_DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16",
           "float32": "float32", "fp32": "float32", "float": "float32"}


def _device(name: str | None) -> Any:
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name in ("rocm", "hip"):  # ROCm torch exposes HIP devices as "cuda"
        name = "cuda"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise BadInputError(f"bad device {name!r}: {exc}", param="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {name!r} asked for, but torch sees no CUDA/ROCm GPU", param="device")
    return dev


def _dtype(name: Any, default: str) -> Any:
    import torch

    if name is None:
        name = default
    if isinstance(name, torch.dtype):
        return name
    key = _DTYPES.get(str(name).replace("torch.", "").lower())
    if key is None:
        raise BadInputError(f"bad dtype {name!r}; use bfloat16, float16 or float32", param="dtype")
    return getattr(torch, key)


def parse_placement(device: str | None = "auto", dtype: str | None = None,
                    placement: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(device, dtype) per component. Defaults: every component on ``device``; on a GPU the
    transformers in bfloat16 and the autoencoder in float32 (upstream's choice), on the CPU all
    float32; ``dtype`` overrides the transformers' dtype. ``placement`` pins components, each as
    ``"cuda:float16"``, ``"cpu"``, ``("cpu", "float32")`` or ``{"device": ..., "dtype": ...}``."""
    base = _device(device)
    out: dict[str, tuple[Any, Any]] = {}
    for comp in COMPONENTS:
        on_gpu = base.type != "cpu"
        default = ("float32" if comp == "autoencoder" else (dtype or "bfloat16")) if on_gpu else (dtype if comp != "autoencoder" and dtype else "float32")
        out[comp] = (base, _dtype(default, "float32"))
    for comp, spec in (placement or {}).items():
        if comp not in COMPONENTS:
            raise BadInputError(f"unknown echo-tts component {comp!r}; components: {', '.join(COMPONENTS)}", param="placement")
        if isinstance(spec, Mapping):
            dev_name, dt_name = spec.get("device"), spec.get("dtype")
        elif isinstance(spec, (tuple, list)):
            dev_name, dt_name = (list(spec) + [None])[:2]
        else:
            text = str(spec)
            head, _, tail = text.rpartition(":")
            if head and _DTYPES.get(tail.lower()):
                dev_name, dt_name = head, tail
            else:
                dev_name, dt_name = text, None
        dev = _device(dev_name) if dev_name else out[comp][0]
        default = "float32" if dev.type == "cpu" else ("float32" if comp == "autoencoder" else "bfloat16")
        out[comp] = (dev, _dtype(dt_name, default))
    return out


def load(model: str | Path | None = None, *, device: str | None = "auto", dtype: str | None = None,
         placement: Mapping[str, Any] | None = None, echo_path: str = "echo-tts-base",
         ae_path: str = "fish-s1-dac-min", pca_file: str = "pca_state.safetensors", **options: Any) -> EchoEngine:
    """Load Echo-TTS from ``model`` (a directory in the upstream layout; see ``_load``).

    Options: ``threads`` (CPU threads for torch), ``preset`` (the default per-call preset), ``cuda_graphs`` (default true; CUDA only),
    ``compile`` (torch.compile the DiT block before graph capture; default: on for CUDA with Triton, off elsewhere), ``max_voices``
    (speaker-latent LRU size), ``max_shapes`` (DiT buckets kept captured), ``chunk_frames``,
    ``max_chunk_frames``, ``snake`` (how the decoder runs Snake: ``auto``, the default = the fused
    walk of ``_fastdec``, Triton on CUDA, torch elsewhere; ``triton``; ``torch``; or upstream's
    module forward with ``script`` = upstream's TorchScript, ``compile`` or ``eager``).
    """
    from ._load import resolve_files

    threads = options.pop("threads", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if model is None:
        raise ModelNotFoundError("echo-tts needs a local model directory (--model-dir DIR) in the upstream layout", param="model")
    files = resolve_files(model, echo_path=echo_path, ae_path=ae_path, pca_file=pca_file)
    return EchoEngine(files, str(Path(model).expanduser().resolve()), parse_placement(device, dtype, placement), **options)
