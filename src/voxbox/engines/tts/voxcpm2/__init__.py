"""VoxCPM2 engine (``voxcpm2``): tokenizer-free, context-aware TTS with voice cloning, 48 kHz.

VoxCPM2 (PyPI ``voxcpm``, Apache-2.0, OpenBMB) generates speech as continuous AudioVAE latents,
one patch of 4 frames (0.16 s) per autoregressive step: a MiniCPM4 text-semantic LM and a residual
acoustic LM condition a small local DiT that draws each patch by flow matching (``timesteps`` Euler
steps with classifier-free guidance); a causal AudioVAE decodes the latents to 48 kHz. A voice is
cloned from a reference clip (upstream's "reference" mode, no transcript needed).

voxbox builds upstream's own network modules (imported without the package's ``__init__``, which
needs torchaudio, librosa and the hub client; see ``_upstream``) from a local directory in the
upstream layout (``_model``), and runs its own loop (``_runner``): the whole AR step captured in a
CUDA graph on GPUs, stop flags read every few steps instead of every step, the AudioVAE decoding
windows of patches as they come, its causal state carried (upstream's streaming decoder)::

    engine = load("/models/VoxCPM2", device="cuda")
    engine = load("/models/VoxCPM2", placement={"lm": "cuda:float16", "dit": "cuda:float16", "vae": "cpu"})
    for chunk in engine.stream("Hello there.", timesteps=5):
        ...

Per-call options (``None`` = upstream's default): ``timesteps`` (10), ``cfg_value`` (2.0), ``seed``,
``min_len`` (2) / ``max_len`` (4096; patches, further capped by the text length as upstream does),
``first_window_patches`` / ``window_patches`` (streamed decode windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

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

__all__ = ["COMPONENTS", "SPEC", "VoxCPM2Engine", "VoxCPM2LoadOptions", "VoxCPM2Options", "load", "parse_placement"]


def __getattr__(name: str) -> Any:
    if name == "VoxCPM2Engine":
        from ._engine import VoxCPM2Engine

        return VoxCPM2Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class VoxCPM2Options(Options):
    """Per-call options (``None`` = upstream's default); see the module docstring."""

    timesteps: int | None = None
    cfg_value: float | None = None
    seed: int | None = None
    min_len: int | None = None
    max_len: int | None = None
    first_window_patches: int | None = None
    window_patches: int | None = None

    def check(self) -> None:
        if self.timesteps is not None and not 1 <= self.timesteps <= 100:
            raise BadInputError(f"timesteps must be between 1 and 100, got {self.timesteps}", param="timesteps")
        if self.cfg_value is not None and not (math.isfinite(self.cfg_value) and 0 <= self.cfg_value <= 50):
            raise BadInputError(f"cfg_value must be between 0 and 50, got {self.cfg_value}", param="cfg_value")
        for name in ("min_len", "max_len", "first_window_patches", "window_patches"):
            value = getattr(self, name)
            if value is not None and not (0 <= value if name == "min_len" else 1 <= value):
                raise BadInputError(f"{name} must be {'>= 0' if name == 'min_len' else 'positive'}, got {value}",
                                    param=name)


@dataclass(frozen=True)
class VoxCPM2LoadOptions(Options):
    cuda_graphs: bool | None = None
    check_every: int | None = None
    max_length: int | None = None
    max_voices: int | None = None
    first_window_patches: int | None = None
    window_patches: int | None = None
    compile: bool | None = None


COMPONENTS = ("lm", "dit", "vae")
_TF = ("bfloat16", "float16", "float32")
# Published VoxCPM2 sizes: MiniCPM4 base LM (28 x 2048) + residual LM (8 layers) + local encoder and
# projections; the 12-layer local DiT; the 48 kHz AudioVAE.
_SPEC_COMPONENTS = (
    ComponentSpec("lm", params=2_020_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TF, backend="torch",
                  kind="transformer", overhead_bytes=1 * 2**30),
    ComponentSpec("dit", params=200_000_000, devices=("cpu", "cuda", "rocm"), dtypes=_TF, backend="torch",
                  kind="transformer", overhead_bytes=128 * 2**20),
    ComponentSpec("vae", params=75_000_000, devices=("cpu", "cuda", "rocm"), dtypes=("float32",), backend="torch",
                  kind="vocoder", overhead_bytes=1 * 2**30),
)


def parse_placement(device: str | None = "auto", dtype: str | None = None,
                    placement: Mapping[str, Any] | None = None) -> dict[str, tuple[Any, Any]]:
    """(device, dtype) per component (see :mod:`voxbox.engines.placement`); the AudioVAE stays
    float32 (upstream runs it in float32 whatever the model dtype)."""
    placed = resolve_placement("voxcpm2", _SPEC_COMPONENTS, device=device, dtype=dtype, placement=placement)
    out = {comp: (p.device, p.dtype) for comp, p in placed.items()}
    if out["lm"][0] != out["dit"][0]:
        if "dit" in (placement or {}) and "lm" in (placement or {}):
            raise BadInputError("voxcpm2's lm and dit run one step together and must share a device",
                                param="placement")
        lead = "dit" if "dit" in (placement or {}) else "lm"  # the pinned one (or the LM) decides
        other = "lm" if lead == "dit" else "dit"
        out[other] = out[lead]
    return out


def load(model: str | Path | None = None, *, device: str | None = "auto", dtype: str | None = None,
         placement: Mapping[str, Any] | None = None, threads: int | None = None, cuda_graphs: bool = True,
         check_every: int = 4, max_length: int | None = None, max_voices: int = 32, first_window_patches: int = 2,
         window_patches: int = 8, compile: bool = False) -> Any:
    """Load VoxCPM2 from ``model`` (a directory in the upstream layout; see ``_model``).

    ``cuda_graphs`` replays one captured AR step on CUDA, reading the stop flag every
    ``check_every`` steps; ``max_length`` sizes the KV caches (default: config.json's ``max_length``);
    ``compile`` runs the DiT, the local encoder and both LM steps through ``torch.compile`` (CUDA only;
    the compiled kernels are then captured in the step's graph).
    """
    import torch

    from . import _model
    from ._engine import VoxCPM2Engine
    from ._runner import Runner

    if threads:
        torch.set_num_threads(int(threads))
    if model is None:
        raise ModelNotFoundError("voxcpm2 needs a local model directory (--model-dir DIR) in the upstream layout",
                                 param="model")
    files = _model.resolve_files(model)
    places = parse_placement(device, dtype, placement)
    cfg = _model.read_config(files)
    tokenizer = _model.Tokenizer(files.root)
    net = _model.load_net(files, cfg)
    vae = _model.load_vae(files, cfg)
    (ldev, ldt), (_, ddt), (vdev, _) = places["lm"], places["dit"], places["vae"]
    params = {
        "dit": sum(p.numel() for p in net.feat_decoder.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
    }
    params["lm"] = sum(p.numel() for p in net.parameters()) - params["dit"]
    net = net.to(device=ldev, dtype=ldt)
    net.feat_decoder.to(dtype=ddt)
    vae = vae.to(device=vdev, dtype=torch.float32)
    runner = Runner(net, ldev, ldt, ddt, max_length=int(max_length or cfg.get("max_length", 8192)),
                    cuda_graphs=cuda_graphs, check_every=check_every, compile=compile)
    return VoxCPM2Engine(files, str(Path(model).expanduser().resolve()), net, vae, runner, tokenizer, places, params,
                         max_voices=max_voices, first_window=first_window_patches, window=window_patches)


def _factory(req: LoadRequest) -> Any:
    opts = build_options(VoxCPM2LoadOptions, req.options).given()
    return load(req.model, device=req.device, dtype=req.dtype, placement=req.placement, threads=req.threads, **opts)


SPEC: EngineSpec[Any, VoxCPM2Options] = EngineSpec(
    name="voxcpm2", task="tts", factory=_factory, options=VoxCPM2Options, load_options=VoxCPM2LoadOptions,
    description="VoxCPM2 tokenizer-free 48 kHz TTS with voice cloning (local weights directory)",
    requires=("torch", "safetensors", "transformers", "einops", "pydantic", "voxcpm"),
    install_hint="pip install 'voxbox[voxcpm2]' && pip install --no-deps voxcpm",
    components=_SPEC_COMPONENTS,
    capabilities=Capabilities(streaming=True, cloning=True),
    aliases=("voxcpm2",),
    local_names=("voxcpm2", "VoxCPM2"),
)
