"""Random-weight models at real shapes, for speed benchmarks: bench targets name them ``random:SHAPE``.

Timing does not depend on weight values once the work is fixed (tokens, frames, patches, steps,
text), so a model with random weights at the published shapes measures what the real one would
(DESIGN.md, "Engines"); nothing is downloaded. ``build(engine, "random:SHAPE")`` writes the model
once in the engine's upstream layout under the cache directory and returns where it is and the
load options it needs; peers (transformers, upstream Echo-TTS, kokoro-onnx, onnx-asr ...) load the
very same files. These names exist only inside ``voxbox bench``: the server's catalog never
resolves them.

Shapes per engine (``tiny`` = toy sizes for tests on a CPU)::

    torch-whisper  tiny, base, large-v3   HF layout, fp16 (tiny fp32); EOT suppressed, so every
                                          window decodes ``max_new_tokens`` tokens
    echo-tts       tiny, real             EchoDiT 2.8 B + Fish S1-DAC in the hub layout
    fish-s2        tiny, s2-pro           config + word-level tokenizer; weights built at load
    omnivoice      tiny, real             Qwen3-0.6B backbone + Higgs audio v2 codec
    voxcpm2        tiny, real             VoxCPM2 (LM, local encoder, DiT, AudioVAE)
    kokoro         real                   Kokoro-82M exported like kokoro-onnx
    parakeet       tiny, real             FastConformer-TDT (1 or 24 layers of 1024) for onnx-asr
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from voxbox.errors import BadInputError

__all__ = ["PREFIX", "SHAPES", "Built", "build", "is_random", "shape_of"]

PREFIX = "random:"
#: Bumped when a builder's output changes, so stale cached models are not reused.
VERSION = 1

Builder = Callable[[Path, str, str], None]


def _whisper(out: Path, shape: str, device: str) -> None:
    from voxbox.bench.shapes.whisper import write_whisper

    write_whisper(out, shape, device=device)


def _echo(out: Path, shape: str, device: str) -> None:
    from voxbox.engines.tts.echo._random import write_random_model

    write_random_model(out, shape, device=device, hub_layout=True)


def _fish(out: Path, shape: str, device: str) -> None:
    from voxbox.bench.shapes.fish import write_fish_dir

    write_fish_dir(out, tiny=shape == "tiny")


def _omnivoice(out: Path, shape: str, device: str) -> None:
    from voxbox.engines.tts.omnivoice._random import write_random_model

    write_random_model(out, shape, device=device)


def _voxcpm2(out: Path, shape: str, device: str) -> None:
    from voxbox.engines.tts.voxcpm2._random import write_random_model

    write_random_model(out, shape, device=device)


def _kokoro(out: Path, shape: str, device: str) -> None:
    from voxbox.bench.shapes.onnx_models import make_kokoro

    make_kokoro(out)


def _parakeet(out: Path, shape: str, device: str) -> None:
    from voxbox.bench.shapes.onnx_models import make_parakeet

    make_parakeet(out, layers=1 if shape == "tiny" else 24)


@dataclass(frozen=True)
class _Family:
    build: Builder
    shapes: tuple[str, ...]
    #: load options the engine needs for these files (fish-s2 builds its random weights at load)
    load_options: dict[str, Any] = field(default_factory=dict)


_FAMILIES: dict[str, _Family] = {
    "torch-whisper": _Family(_whisper, ("tiny", "base", "large-v3")),
    "echo-tts": _Family(_echo, ("tiny", "real")),
    "fish-s2": _Family(_fish, ("tiny", "s2-pro"), {"weights": "random"}),
    "omnivoice": _Family(_omnivoice, ("tiny", "real")),
    "voxcpm2": _Family(_voxcpm2, ("tiny", "real")),
    "kokoro": _Family(_kokoro, ("real",)),
    "parakeet": _Family(_parakeet, ("tiny", "real")),
}
#: engine -> the shapes ``random:`` may name
SHAPES: dict[str, tuple[str, ...]] = {k: v.shapes for k, v in _FAMILIES.items()}


@dataclass(frozen=True)
class Built:
    """A random model on disk: the directory to load, the load options it needs, the build time."""

    model: str
    load_options: dict[str, Any]
    build_s: float


def is_random(model: str | None) -> bool:
    return isinstance(model, str) and model.startswith(PREFIX)


def shape_of(engine: str, model: str) -> str:
    """The shape named by ``random:SHAPE`` for ``engine``; BadInputError names what exists."""
    shape = model[len(PREFIX):]
    fam = _FAMILIES.get(engine)
    if fam is None:
        have = ", ".join(sorted(_FAMILIES))
        raise BadInputError(f"no random-weight builder for engine {engine!r} (engines with one: {have})", param="model")
    if shape not in fam.shapes:
        raise BadInputError(f"{engine} has no random shape {shape!r} (known: {', '.join(fam.shapes)})", param="model")
    return shape


def _root() -> Path:
    from voxbox.paths import cache_dir

    return cache_dir() / "bench" / "random-models"


def build(engine: str, model: str, device: str = "cpu") -> Built:
    """Write ``random:SHAPE`` for ``engine`` once (cached; a second caller reuses it) and describe it.

    ``device`` is where the weights are initialised (a GPU is much faster for billions of
    parameters); the files are the same. Built in a temporary folder and renamed, so a process
    that dies half-way leaves nothing that looks complete.
    """
    shape = shape_of(engine, model)
    fam = _FAMILIES[engine]
    out = _root() / f"{engine}-{shape}-v{VERSION}"
    if (out / ".complete").is_file():
        return Built(str(out), dict(fam.load_options), 0.0)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    init_device = device if device.startswith("cuda") else "cpu"
    try:
        fam.build(tmp, shape, init_device)
        (tmp / ".complete").write_text(f"{engine} {shape} v{VERSION}\n", encoding="utf-8")
        if (out / ".complete").is_file():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Built(str(out), dict(fam.load_options), time.perf_counter() - t0)
