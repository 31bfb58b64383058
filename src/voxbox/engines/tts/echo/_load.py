"""Loading Echo-TTS weights from a local directory in the upstream layout, one component at a time.

Layout (as on the hub, or under ``jordand/`` as upstream's ``model_path`` expects)::

    MODEL_DIR/echo-tts-base/pytorch_model.safetensors     EchoDiT (text encoder, speaker encoder, DiT)
    MODEL_DIR/echo-tts-base/pca_state.safetensors         pca_components, pca_mean, latent_scale
    MODEL_DIR/fish-s1-dac-min/pytorch_model.safetensors   Fish S1-DAC autoencoder

The ``EchoDiT`` hyper-parameters are read from the tensor shapes in the safetensors header (the
released checkpoint gives upstream's hard-coded 2048-wide, 24-layer config), so a smaller model
saved in the same layout loads through the same code. The autoencoder is upstream's ``build_ae()``
unless ``fish-s1-dac-min/voxbox_ae_config.json`` describes a smaller one of the same classes
(used by the tests' tiny model).

Modules are built on the meta device and each tensor is read once, straight onto its component's
device in its component's dtype (``load_state_dict(assign=True)``): no full-size copy on the CPU
first and no second move.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxbox.engines.base import model_files
from voxbox.errors import ModelLoadError, ModelNotFoundError

from ._dit import COMPILE_OPTIONS
from ._upstream import UpstreamModule, upstream_autoencoder, upstream_model

__all__ = [
    "AE_CONFIG_FILE", "COMPONENT_PREFIXES", "ModelFiles", "PCA", "build_dac", "dit_config", "load_autoencoder",
    "load_dit", "load_pca", "resolve_files", "set_snake", "snake_function",
]

AE_CONFIG_FILE = "voxbox_ae_config.json"
#: Which EchoDiT parameters belong to which planner component (the rest is the DiT).
COMPONENT_PREFIXES = {
    "text_encoder": ("text_encoder.", "text_norm."),
    "speaker_encoder": ("speaker_encoder.", "speaker_norm."),
}
#: Parameters of upstream's block-wise (continuation) mode, which upstream's EchoTTS deletes too.
_BLOCKWISE = re.compile(r"^(latent_encoder\.|latent_norm\.)|\.w[kv]_latent\.")


@dataclass(frozen=True)
class ModelFiles:
    dit: Path
    pca: Path
    ae: Path
    ae_config: Path | None


def resolve_files(model_dir: str | Path, echo_path: str = "echo-tts-base", ae_path: str = "fish-s1-dac-min",
                  pca_file: str = "pca_state.safetensors") -> ModelFiles:
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ModelNotFoundError(f"echo-tts model directory {str(root)!r} does not exist", param="model")

    def find(sub: str) -> Path:
        for cand in (root / sub, root / "jordand" / sub, Path(sub).expanduser()):
            if cand.is_dir():
                return cand
        raise ModelNotFoundError(f"{sub!r} not found under {str(root)!r} (expected the upstream layout)", param="model")

    echo_dir, ae_dir = find(echo_path), find(ae_path)
    files = ModelFiles(
        dit=echo_dir / "pytorch_model.safetensors",
        pca=echo_dir / pca_file,
        ae=ae_dir / "pytorch_model.safetensors",
        ae_config=(ae_dir / AE_CONFIG_FILE) if (ae_dir / AE_CONFIG_FILE).is_file() else None,
    )
    for p in (files.dit, files.pca, files.ae):
        if not p.is_file():
            raise ModelNotFoundError(f"missing model file {str(p)!r}", param="model")
    return files


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # corrupt header, not a safetensors file
        raise ModelLoadError(f"cannot read {str(path)!r}: {exc}") from exc


def dit_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """EchoDiT constructor arguments from the checkpoint's tensor shapes."""

    def count(prefix: str) -> int:
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        return 1 + max((int(m.group(1)) for k in shapes if (m := pat.match(k))), default=-1)

    try:
        latent_size = shapes["in_proj.weight"][1]
        spk_in, spk_model = shapes["speaker_encoder.in_proj.weight"][1], shapes["speaker_encoder.in_proj.weight"][0]
        return dict(
            latent_size=latent_size,
            model_size=shapes["in_proj.weight"][0],
            num_layers=count("blocks."),
            num_heads=shapes["blocks.0.attention.q_norm.weight"][0],
            intermediate_size=shapes["blocks.0.mlp.w1.weight"][0],
            norm_eps=1e-5,
            text_vocab_size=shapes["text_encoder.text_embedding.weight"][0],
            text_model_size=shapes["text_encoder.text_embedding.weight"][1],
            text_num_layers=count("text_encoder.blocks."),
            text_num_heads=shapes["text_encoder.blocks.0.attention.q_norm.weight"][0],
            text_intermediate_size=shapes["text_encoder.blocks.0.mlp.w1.weight"][0],
            speaker_patch_size=spk_in // latent_size,
            speaker_model_size=spk_model,
            speaker_num_layers=count("speaker_encoder.blocks."),
            speaker_num_heads=shapes["speaker_encoder.blocks.0.attention.q_norm.weight"][0],
            speaker_intermediate_size=shapes["speaker_encoder.blocks.0.mlp.w1.weight"][0],
            timestep_embed_size=shapes["cond_module.0.weight"][1],
            adaln_rank=shapes["blocks.0.attention_adaln.shift_down.weight"][0],
        )
    except (KeyError, IndexError) as exc:
        raise ModelLoadError(f"not an Echo-TTS DiT checkpoint (missing {exc})") from exc


def component_of(name: str) -> str:
    for comp, prefixes in COMPONENT_PREFIXES.items():
        if name.startswith(prefixes):
            return comp
    return "dit"


def load_dit(
    path: Path, placement: dict[str, tuple[torch.device, torch.dtype]]
) -> tuple[UpstreamModule, dict[str, Any]]:
    """EchoDiT with each component's tensors on its own device and dtype (no block-wise modules)."""
    um = upstream_model()
    cfg = dit_config(_shapes(path))
    with torch.device("meta"):
        model = um.EchoDiT(**cfg)
    model.latent_encoder = None
    model.latent_norm = None
    for blk in model.blocks:
        blk.attention.wk_latent = None
        blk.attention.wv_latent = None
    from voxbox.engines.weights import read_tensors  # staged reads straight to a GPU

    state: dict[str, torch.Tensor] = {}
    source = placement["dit"][0] if placement["dit"][0].type == "cuda" else torch.device("cpu")
    with model_files(f"the Echo-TTS DiT {str(path)!r}"):
        for key, t in read_tensors(path, source, keep=lambda k: not _BLOCKWISE.search(k)):
            dev, dt = placement[component_of(key)]
            state[key] = t.to(device=dev, dtype=dt)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise ModelLoadError(
            f"Echo-TTS DiT checkpoint does not match its shapes: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval().requires_grad_(False), cfg


def build_dac(cfg: dict[str, Any] | None) -> UpstreamModule:
    """Upstream ``build_ae()`` (cfg None), or the same classes at the sizes ``cfg`` gives."""
    ua = upstream_autoencoder()
    if cfg is None:
        return ua.build_ae()
    q = cfg["quantizer"]
    q_config = ua.ModelArgs(
        block_size=q.get("block_size", 4096), n_layer=q["n_layer"], n_head=q["n_head"], dim=cfg["latent_dim"],
        intermediate_size=q["intermediate_size"], head_dim=q.get("head_dim", 64), norm_eps=1e-5,
        dropout_rate=0.1, attn_dropout_rate=0.1, channels_first=True,
    )

    def make_transformer() -> torch.nn.Module:
        return ua.WindowLimitedTransformer(
            causal=True, window_size=q.get("window_size", 128), input_dim=cfg["latent_dim"], config=q_config
        )

    quantizer = ua.DownsampleResidualVectorQuantize(
        input_dim=cfg["latent_dim"],
        n_codebooks=q["n_codebooks"],
        codebook_size=q["codebook_size"],
        codebook_dim=q["codebook_dim"],
        quantizer_dropout=0.5,
        downsample_factor=tuple(q.get("downsample_factor", (2, 2))),
        semantic_codebook_size=q["semantic_codebook_size"],
        pre_module=make_transformer(),
        post_module=make_transformer(),
    )

    def general(**kw: Any) -> Any:
        return ua.ModelArgs(
            block_size=kw.get("block_size", cfg.get("block_size", 16384)), n_layer=kw.get("n_layer", 8),
            n_head=kw.get("n_head", 8), dim=kw.get("dim", 512), intermediate_size=kw.get("intermediate_size", 1536),
            n_local_heads=-1, head_dim=64, rope_base=10000, norm_eps=1e-5, dropout_rate=0.1, attn_dropout_rate=0.1,
            channels_first=True,
        )

    return ua.DAC(
        encoder_dim=cfg["encoder_dim"],
        encoder_rates=list(cfg.get("encoder_rates", [2, 4, 8, 8])),
        latent_dim=cfg["latent_dim"],
        decoder_dim=cfg["decoder_dim"],
        decoder_rates=list(cfg.get("decoder_rates", [8, 8, 4, 2])),
        quantizer=quantizer,
        sample_rate=44100,
        causal=True,
        encoder_transformer_layers=list(cfg.get("encoder_transformer_layers", [0, 0, 0, 4])),
        decoder_transformer_layers=list(cfg.get("decoder_transformer_layers", [4, 0, 0, 0])),
        transformer_general_config=general,
    )


def _snake_eager(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


_SNAKE_COMPILED: list = []


def snake_function(mode: str):
    """The Snake activation (x + sin^2(alpha x) / alpha) as run by the autoencoder's modules.

    The decoder normally does not call these modules: modes ``"auto"`` (the default), ``"triton"``
    and ``"torch"`` decode through ``_fastdec.decode`` (one fused Triton kernel per Snake, with the
    following convolution's causal padding written in place, on CUDA; plain torch ops elsewhere or
    for ``"torch"``), and the modules keep the eager function (the encoder still uses them). The
    other modes run upstream's module forward, for comparison: ``"script"`` is upstream's
    ``@torch.jit.script`` function; ``"compile"`` the same math through ``torch.compile``;
    ``"eager"`` plain ops (five passes over the activations).
    """
    if mode in ("auto", "triton", "torch"):
        return _snake_eager
    if mode == "script":
        return upstream_autoencoder().snake
    if mode == "compile":
        if not _SNAKE_COMPILED:
            _SNAKE_COMPILED.append(torch.compile(_snake_eager, dynamic=True, options=COMPILE_OPTIONS))
        return _SNAKE_COMPILED[0]
    if mode == "eager":
        return _snake_eager
    raise ValueError(f"snake must be one of auto, triton, torch, script, compile, eager; got {mode!r}")


class _Snake(torch.nn.Module):
    """Upstream ``Snake1d`` with a choice of implementation (``snake_function``); same parameter."""

    def __init__(self, alpha: torch.nn.Parameter, mode: str) -> None:
        super().__init__()
        self.alpha = alpha
        self.mode = mode
        self.fn = snake_function(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.alpha)


def set_snake(ae: UpstreamModule, mode: str) -> None:
    """Switch every Snake activation of a loaded autoencoder to ``mode``."""
    fn = snake_function(mode)
    ae.voxbox_snake = mode  # read by _codec.run_decoder
    for mod in ae.modules():
        if isinstance(mod, _Snake):
            mod.mode, mod.fn = mode, fn


def load_autoencoder(
    files: ModelFiles, device: torch.device, dtype: torch.dtype, snake: str | None = None
) -> UpstreamModule:
    """Fish S1-DAC on one device/dtype, weight norm folded into plain weights once.

    The attention-mask buffers (``causal_mask``, up to 16384^2 booleans) are never read by the
    window-limited transformers upstream uses, so they are not loaded; the rotary tables are
    recomputed with upstream's own function instead of trusting the file to carry them.
    """
    from safetensors import safe_open
    from torch.nn.utils import parametrize

    ua = upstream_autoencoder()
    with model_files(f"the autoencoder config {str(files.ae_config)!r}"):
        cfg = json.loads(files.ae_config.read_text()) if files.ae_config else None
        with torch.device("meta"):
            ae = build_dac(cfg)
    state: dict[str, torch.Tensor] = {}
    with model_files(f"the autoencoder {str(files.ae)!r}"), safe_open(str(files.ae), framework="pt", device="cpu") as f:
        for key in f.keys():
            if key.endswith(("causal_mask", "freqs_cis")):
                continue
            state[key] = f.get_tensor(key).to(device=device, dtype=torch.float32)
    missing, unexpected = ae.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith(("causal_mask", "freqs_cis"))]
    if missing or unexpected:
        raise ModelLoadError(
            f"Fish S1-DAC checkpoint does not match: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for mod in ae.modules():
        if isinstance(mod, ua.Transformer):
            c = mod.config
            mod.freqs_cis = ua.precompute_freqs_cis(c.block_size, c.head_dim, c.rope_base).to(device)
            mod.causal_mask = torch.ones((1, 1), dtype=torch.bool, device=device)
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    snake = snake or "auto"  # fused decoder walk (see snake_function and _fastdec)
    for parent in list(ae.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ua.Snake1d):
                setattr(parent, name, _Snake(child.alpha, snake))
    ae = ae.to(dtype=dtype) if dtype != torch.float32 else ae
    ae.voxbox_snake = snake
    for mod in ae.modules():  # rotary tables stay in upstream's bfloat16
        if isinstance(mod, ua.Transformer):
            mod.freqs_cis = mod.freqs_cis.to(torch.bfloat16)
    return ae.eval().requires_grad_(False)


@dataclass(frozen=True)
class PCA:
    components: torch.Tensor  # (latent, ae_latent) float32
    mean: torch.Tensor  # (ae_latent,)
    scale: float


def load_pca(path: Path, device: torch.device) -> PCA:
    from safetensors.torch import load_file

    try:
        with model_files(f"the PCA state {str(path)!r}"):
            t = load_file(str(path), device="cpu")
        return PCA(
            t["pca_components"].float().to(device), t["pca_mean"].float().to(device), float(t["latent_scale"].item())
        )
    except KeyError as exc:
        raise ModelLoadError(f"{str(path)!r} lacks {exc}") from exc
