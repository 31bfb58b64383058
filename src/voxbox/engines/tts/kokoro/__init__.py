"""Kokoro-82M (``kokoro``): 82M-parameter StyleTTS2-style TTS, 24 kHz, 9 languages, 50+ voices.

Loads a local directory in one of the two upstream layouts (see ``_files``): the ONNX export as
kokoro-onnx uses it (``kokoro-v1.0.onnx`` + ``voices-v1.0.bin``) on ONNX Runtime (CPU, CUDA,
ROCm/MIGraphX execution providers), or the PyTorch checkpoint (``config.json`` +
``kokoro-v1_0.pth`` + ``voices/*.pt``) on the upstream model classes. Nothing is downloaded::

    engine = load("/models/kokoro")                            # ONNX Runtime, first GPU EP else CPU
    for chunk in engine.stream("Hello there. How are you?", voice="af_bella(2)+af_sky(1)", speed=1.1):
        ...                                                    # one chunk per sentence
    stream.details["words"]                                    # [Word(start, end, word), ...]

Per-call options (:class:`KokoroOptions`): ``language`` (ISO code or Kokoro letter; default from
the voice's first letter), ``trim`` (cut leading/trailing silence of each pass, as kokoro-onnx
does; default off, as upstream's pipeline), ``normalize`` (the text-normalisation hook; default
on), ``word_timestamps`` (default on when the model reports durations).
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

__all__ = ["SPEC", "KokoroLoadOptions", "KokoroOptions", "load"]

INSTALL_HINT = "pip install 'voxbox[kokoro]'"


@dataclass(frozen=True)
class KokoroOptions(Options):
    """Per-call options; ``None`` = the default described in the module docstring."""

    language: str | None = None
    trim: bool | None = None
    normalize: bool | None = None
    word_timestamps: bool | None = None

    def check(self) -> None:
        if self.language is not None:
            from ._phonemes import espeak_language

            espeak_language(self.language, None)


@dataclass(frozen=True)
class KokoroLoadOptions(Options):
    """Load-time options: ``backend`` (onnx | torch; default: ONNX when the directory has a graph),
    ``voice`` (the default voice), ``language`` (the default language), ``workers`` (sentences
    synthesised at once, one ONNX session each; default 1 on the CPU, 2 on a GPU)."""

    backend: str | None = None
    voice: str | None = None
    language: str | None = None
    workers: int | None = None

    def check(self) -> None:
        if self.workers is not None and not 1 <= self.workers <= 8:
            raise BadInputError(f"workers must be between 1 and 8, got {self.workers}", param="workers")
        if self.backend not in (None, "auto", "onnx", "torch"):
            raise BadInputError(f"backend must be onnx or torch, got {self.backend!r}", param="backend")


def load(model: str | Path | None = None, *, device: str = "auto", dtype: str | None = None,
         threads: int | None = None, backend: str | None = None, voice: str | None = None,
         language: str | None = None, workers: int | None = None) -> Any:
    """Load Kokoro from ``model`` (a directory, or the .onnx/.pth inside one)."""
    from ._engine import KokoroEngine
    from ._files import find_files

    if model in (None, "", "kokoro", "kokoro-82m"):
        raise ModelNotFoundError("kokoro needs a local model directory (--model-dir DIR with kokoro-v1.0.onnx and "
                                 "voices-v1.0.bin, or a models-dir folder named kokoro)", param="model")
    if dtype not in (None, "auto", "float32", "fp32"):
        raise BadInputError(f"kokoro runs the weights it is given (float32 graph or checkpoint); dtype {dtype!r} "
                            "is not converted", param="dtype")
    files = find_files(str(model), backend)
    return KokoroEngine(files, device=device or "auto", threads=int(threads or 0), voice=voice, language=language,
                        workers=workers)


def _factory(req: LoadRequest) -> Any:
    opts = build_options(KokoroLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, backend=opts.backend,
                voice=opts.voice, language=opts.language, workers=opts.workers)


SPEC: EngineSpec[Any, KokoroOptions] = EngineSpec(
    name="kokoro", task="tts", factory=_factory, options=KokoroOptions, load_options=KokoroLoadOptions,
    description="Kokoro-82M TTS (24 kHz, 9 languages, voice mixing, word timestamps); local ONNX or PyTorch weights",
    requires=("onnxruntime", "phonemizer", "espeakng_loader"), install_hint=INSTALL_HINT,
    components=(ComponentSpec("model", params=82_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                              backend="onnxruntime", kind="vocoder", overhead_bytes=300 * 2**20),),
    capabilities=Capabilities(streaming=True, word_timestamps=True, max_concurrency=2,
                              languages=("en", "es", "fr", "hi", "it", "ja", "pt", "zh")),
    default_model=None, aliases=("kokoro",), local_names=("kokoro", "kokoro-82m"),
)
