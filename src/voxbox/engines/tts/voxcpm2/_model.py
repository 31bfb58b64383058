"""VoxCPM2 checkpoint layout, configuration, network and tokenizer (upstream ``VoxCPM2Model.from_local``).

Layout (``openbmb/VoxCPM2`` on the hub)::

    MODEL_DIR/config.json             VoxCPMConfig: lm_config (MiniCPM4), encoder/dit configs, AudioVAE config
    MODEL_DIR/model.safetensors       base_lm, residual_lm, feat_encoder, feat_decoder, projections, stop head
    MODEL_DIR/audiovae.safetensors    the AudioVAE (16 kHz encoder, 48 kHz decoder)
    MODEL_DIR/tokenizer.json          the text tokenizer (MiniCPM4's)

The network is built from upstream's own modules (``_upstream``) with upstream's attribute names, so
``model.safetensors`` loads as is; tensor shapes are checked against ``config.json`` first, and a
missing file, a wrong shape or an unreadable file is one clear error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxbox.errors import ModelLoadError, ModelNotFoundError

from ._upstream import modules

__all__ = [
    "Files", "Net", "Tokenizer", "build_net", "build_vae", "load_net", "load_vae", "read_config", "resolve_files",
]

REQUIRED = ("config.json", "model.safetensors", "audiovae.safetensors", "tokenizer.json")
AUDIO_START, AUDIO_END, REF_START, REF_END = 101, 102, 103, 104


@dataclass(frozen=True)
class Files:
    root: Path
    config: Path
    weights: Path
    vae: Path
    tokenizer: Path


def resolve_files(model_dir: str | Path) -> Files:
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ModelNotFoundError(f"voxcpm2 model directory {str(root)!r} does not exist", param="model")
    missing = [n for n in REQUIRED if not (root / n).is_file()]
    if missing:
        raise ModelNotFoundError(f"voxcpm2 model directory {str(root)!r} is incomplete: missing {', '.join(missing)} "
                                 f"(expected the upstream layout: {', '.join(REQUIRED)})", param="model")
    return Files(root, root / "config.json", root / "model.safetensors", root / "audiovae.safetensors",
                 root / "tokenizer.json")


def read_config(files: Files) -> dict[str, Any]:
    try:
        cfg = json.loads(files.config.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {str(files.config)!r}: {exc}") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("lm_config"), dict):
        raise ModelLoadError(f"{str(files.config)!r} has no lm_config (not a VoxCPM2 checkpoint)")
    return cfg


class Net(nn.Module):
    """Everything but the AudioVAE, under ``VoxCPM2Model``'s attribute names."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        m = modules()
        try:
            lm = m.minicpm4.MiniCPM4Config(**cfg["lm_config"])
            enc_c, dit_c = dict(cfg["encoder_config"]), dict(cfg["dit_config"])
            cfm = m.locdit.CfmConfig(**dict(dit_c.get("cfm_config") or {}))
        except Exception as exc:  # noqa: BLE001 - pydantic validation errors, missing sections
            raise ModelLoadError(f"config.json is not a VoxCPM2 config: {str(exc).splitlines()[0]}") from exc
        self.lm_config = lm
        self.patch_size = int(cfg.get("patch_size", 4))
        self.feat_dim = int(cfg.get("feat_dim", 64))
        self.base_lm = m.minicpm4.MiniCPMModel(lm)
        res = lm.model_copy(deep=True)
        res.num_hidden_layers = int(cfg.get("residual_lm_num_layers", 8))
        res.vocab_size = 0
        res.no_rope = bool(cfg.get("residual_lm_no_rope", False))
        self.residual_lm = m.minicpm4.MiniCPMModel(res)

        def local(c: dict[str, Any]) -> Any:
            out = lm.model_copy(deep=True)
            out.hidden_size, out.intermediate_size = int(c.get("hidden_dim", 1024)), int(c.get("ffn_dim", 4096))
            out.num_attention_heads, out.num_hidden_layers = int(c.get("num_heads", 16)), int(c.get("num_layers", 4))
            out.kv_channels = c.get("kv_channels")
            out.vocab_size = 0
            return out

        self.feat_encoder = m.locenc.VoxCPMLocEnc(local(enc_c), input_dim=self.feat_dim)
        self.feat_decoder = m.locdit.UnifiedCFM(
            in_channels=self.feat_dim, cfm_params=cfm,
            estimator=m.locdit.VoxCPMLocDiTV2(local(dit_c), in_channels=self.feat_dim),
            mean_mode=bool(dit_c.get("dit_mean_mode", False)))
        h, hd = lm.hidden_size, int(dit_c.get("hidden_dim", 1024))
        self.fsq_layer = m.layers.ScalarQuantizationLayer(h, h, int(cfg.get("scalar_quantization_latent_dim", 512)),
                                                          int(cfg.get("scalar_quantization_scale", 9)))
        self.enc_to_lm_proj = nn.Linear(int(enc_c.get("hidden_dim", 1024)), h)
        self.lm_to_dit_proj = nn.Linear(h, hd)
        self.res_to_dit_proj = nn.Linear(h, hd)
        self.fusion_concat_proj = nn.Linear(2 * h, h)
        self.stop_proj = nn.Linear(h, h)
        self.stop_head = nn.Linear(h, 2, bias=False)

    @property
    def scale_emb(self) -> float:
        return float(self.lm_config.scale_emb) if self.lm_config.use_mup else 1.0


def build_net(cfg: dict[str, Any]) -> Net:
    return Net(cfg)


def build_vae(cfg: dict[str, Any]) -> Any:
    m = modules()
    vc = cfg.get("audio_vae_config")
    try:
        return m.audiovae.AudioVAEV2(config=m.audiovae.AudioVAEConfigV2(**vc) if vc else None)
    except Exception as exc:  # noqa: BLE001 - pydantic validation
        raise ModelLoadError(f"config.json audio_vae_config is invalid: {str(exc).splitlines()[0]}") from exc


def _read_all(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - corrupt header, truncated file, not safetensors
        raise ModelLoadError(f"cannot read {str(path)!r} (not a valid safetensors file: {exc})") from exc


def _assign(module: nn.Module, state: dict[str, torch.Tensor], what: str, cfg_name: str) -> None:
    own = module.state_dict()
    for name, want in own.items():
        got = state.get(name)
        if got is None:
            raise ModelLoadError(f"{what} checkpoint lacks {name!r}")
        if tuple(got.shape) != tuple(want.shape):
            raise ModelLoadError(f"{what} tensor {name!r} has shape {tuple(got.shape)}, {cfg_name} implies "
                                 f"{tuple(want.shape)}")
    module.load_state_dict({k: state[k] for k in own}, strict=True)


def load_net(files: Files, cfg: dict[str, Any]) -> Net:
    """The network in float32 on the CPU (the engine moves each part to its placement)."""
    net = build_net(cfg)
    _assign(net, _read_all(files.weights), "VoxCPM2", "config.json")
    return net.eval().requires_grad_(False)


def load_vae(files: Files, cfg: dict[str, Any]) -> Any:
    """The AudioVAE in float32 on the CPU, weight norm folded into plain weights."""
    vae = build_vae(cfg)
    _assign(vae, _read_all(files.vae), "AudioVAE", "config.json audio_vae_config")
    for mod in vae.modules():
        if hasattr(mod, "weight_g"):
            torch.nn.utils.remove_weight_norm(mod)
    return vae.eval().requires_grad_(False)


class Tokenizer:
    """Upstream's text tokenizer: transformers' ``LlamaTokenizerFast`` on the checkpoint's files (as
    upstream loads it, so its token rules are the same), multi-character Chinese tokens split into
    characters (upstream ``mask_multichar_chinese_tokens``), no special tokens added."""

    def __init__(self, root: Path) -> None:
        from transformers import LlamaTokenizerFast

        try:
            self.tok = LlamaTokenizerFast.from_pretrained(str(root))
        except Exception as exc:  # noqa: BLE001 - transformers raises many kinds here
            raise ModelLoadError(f"cannot read the tokenizer in {str(root)!r}: {exc}") from exc
        self.multichar = {t for t in self.tok.vocab if len(t) >= 2 and all("\u4e00" <= c <= "\u9fff" for c in t)}

    def __call__(self, text: str) -> list[int]:
        tokens: list[str] = []
        for token in self.tok.tokenize(text):
            clean = token.replace("\u2581", "")
            tokens.extend(list(clean) if clean in self.multichar else [token])
        return [int(i) for i in self.tok.convert_tokens_to_ids(tokens)]
