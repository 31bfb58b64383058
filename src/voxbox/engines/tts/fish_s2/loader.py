"""Load Fish S2-Pro from a local directory in the upstream layout (and write random ones for tests).

Layout (as published for ``fishaudio/s2-pro``)::

    config.json                         dual-AR shapes (model_type fish_qwen3_omni)
    model-00001-of-0000N.safetensors    dual-AR weights, sharded (or model.safetensors)
    model.safetensors.index.json        optional; the shards are found by pattern anyway
    codec.pth                           codec state dict (torch.save), weight-normed convs
    tokenizer.json                      Qwen3-style tokenizer (``tokenizers``)
    codec_config.json                   optional, voxbox's: codec shapes if not S2-Pro's

Checkpoint names: ``text_model.model.{embeddings,layers.N.*,norm}`` for the slow model and
``audio_decoder.{codebook_embeddings,embeddings,layers.N.*,norm,output,project_in}`` for the fast
one; each layer has ``attention.wqkv`` (or legacy ``wq``/``wk``/``wv``), ``attention.wo``, optional
``attention.{q,k}_norm``, ``feed_forward.w1/w2/w3``, ``attention_norm``, ``ffn_norm``. voxbox
stores w1 and w3 as one ``w13`` matrix (one GEMV instead of two per layer).

Tensors are read shard by shard straight to the target device and dtype (on a GPU through
``voxbox.engines.weights``' staged reader), into modules built on the meta device (one copy in memory).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TypeVar

import torch
from torch import Tensor, nn

from .codec import Codec
from .config import CodecConfig, DualARConfig
from .transformer import FastAR, SlowAR

__all__ = [
    "ModelFiles",
    "export_codec_state",
    "export_dual_ar_state",
    "fold_weight_norm",
    "init_random_",
    "load_codec",
    "load_dual_ar",
    "resolve_files",
    "save_dual_ar_shards",
    "write_checkpoint",
]

SLOW_PREFIX = "text_model.model."
FAST_PREFIX = "audio_decoder."
M = TypeVar("M", bound=nn.Module)


@dataclass(frozen=True)
class ModelFiles:
    root: Path
    config: Path
    shards: tuple[Path, ...]
    codec: Path | None
    tokenizer: Path


def resolve_files(model_dir: str | Path, *, need_weights: bool = True) -> ModelFiles:
    root = Path(model_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    config = root / "config.json"
    tok = root / "tokenizer.json"
    for p in (config, tok):
        if not p.exists():
            raise FileNotFoundError(f"{root} has no {p.name} (expected the upstream Fish S2 layout)")
    shards = tuple(sorted(root.glob("model-*.safetensors"))) or tuple(sorted(root.glob("model.safetensors")))
    codec = root / "codec.pth"
    if need_weights:
        if not shards:
            raise FileNotFoundError(f"{root} has no model-*.safetensors shards")
        if not codec.exists():
            raise FileNotFoundError(f"{root} has no codec.pth")
    return ModelFiles(root, config, shards, codec if codec.exists() else None, tok)


# ---------------------------------------------------------------------- dual-AR
def _iter_tensors(shards: tuple[Path, ...], device: torch.device) -> Iterator[tuple[str, Tensor]]:
    from voxbox.engines.weights import read_tensors  # staged reads straight to a GPU

    for shard in shards:
        yield from read_tensors(shard, device, keep=lambda name: name.startswith((SLOW_PREFIX, FAST_PREFIX)))


def _to_voxbox(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """Upstream per-layer names -> voxbox's (fused w13 and wqkv)."""
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for name, t in raw.items():
        m = re.match(r"(.*\.)(attention\.w[qkv]|feed_forward\.w[13])\.weight$", name)
        if m:
            pending.setdefault(m.group(1), {})[m.group(2)] = t
        else:
            out[name] = t
    for prefix, parts in pending.items():
        if "feed_forward.w1" in parts or "feed_forward.w3" in parts:
            out[prefix + "feed_forward.w13.weight"] = torch.cat(
                [parts.pop("feed_forward.w1"), parts.pop("feed_forward.w3")]
            )
        if parts:  # legacy split attention
            out[prefix + "attention.wqkv.weight"] = torch.cat(
                [parts["attention.wq"], parts["attention.wk"], parts["attention.wv"]]
            )
    return out


def _assign(module: nn.Module, state: dict[str, Tensor], what: str) -> None:
    expected = dict(module.state_dict(keep_vars=True))
    missing = sorted(set(expected) - set(state))
    if missing:
        raise KeyError(f"{what}: checkpoint lacks {len(missing)} tensors, e.g. {missing[:4]}")
    for k, t in state.items():
        if k in expected and tuple(expected[k].shape) != tuple(t.shape):
            raise ValueError(f"{what}: {k} has shape {tuple(t.shape)}, config says {tuple(expected[k].shape)}")
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True, assign=True)


def load_dual_ar(files: ModelFiles, cfg: DualARConfig, *, device: torch.device, slow_dtype: torch.dtype,
                 fast_dtype: torch.dtype) -> tuple[SlowAR, FastAR]:
    with torch.device("meta"):
        slow, fast = SlowAR(cfg.text), FastAR(cfg.fast)
    raw_slow: dict[str, Tensor] = {}
    raw_fast: dict[str, Tensor] = {}
    for name, t in _iter_tensors(files.shards, device):
        if name.startswith(SLOW_PREFIX):
            raw_slow[name[len(SLOW_PREFIX):]] = t.to(slow_dtype)
        else:
            raw_fast[name[len(FAST_PREFIX):]] = t.to(fast_dtype)
    _assign(slow, _to_voxbox(raw_slow), "slow AR (text_model.model.*)")
    _assign(fast, _to_voxbox(raw_fast), "fast AR (audio_decoder.*)")
    return slow.eval(), fast.eval()


def init_random_(module: M, seed: int = 0, std: float = 0.02) -> M:
    """Random weights for benchmarks/tests: N(0, std) matrices, unit norms, zero biases."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha",) or name.endswith("norm.weight") or "_norm." in name:
                p.fill_(1.0)
            elif leaf == "gamma":
                p.fill_(0.1)
            elif leaf == "bias":
                p.zero_()
            elif p.device.type == "cpu":
                p.normal_(0.0, std, generator=g)
            else:
                p.normal_(0.0, std)
    return module


def random_dual_ar(cfg: DualARConfig, *, device: torch.device, slow_dtype: torch.dtype, fast_dtype: torch.dtype,
                   seed: int = 0) -> tuple[SlowAR, FastAR]:
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)
    with torch.device(device):
        slow = SlowAR(cfg.text).to(slow_dtype)
        fast = FastAR(cfg.fast).to(fast_dtype)
    return init_random_(slow, seed).eval(), init_random_(fast, seed + 1).eval()


# ---------------------------------------------------------------------- codec
def fold_weight_norm(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fold weight-normed convs (``parametrizations.weight.original0/1`` or ``weight_g/_v``) into plain ``weight``."""
    out: dict[str, Tensor] = {}
    pairs: dict[str, dict[str, Tensor]] = {}
    for k, t in state.items():
        if k.endswith(".parametrizations.weight.original0"):
            pairs.setdefault(k[: -len(".parametrizations.weight.original0")], {})["g"] = t
        elif k.endswith(".parametrizations.weight.original1"):
            pairs.setdefault(k[: -len(".parametrizations.weight.original1")], {})["v"] = t
        elif k.endswith(".weight_g"):
            pairs.setdefault(k[: -len(".weight_g")], {})["g"] = t
        elif k.endswith(".weight_v"):
            pairs.setdefault(k[: -len(".weight_v")], {})["v"] = t
        else:
            out[k] = t
    for base, gv in pairs.items():
        g, v = gv["g"].float(), gv["v"].float()
        norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
        out[base + ".weight"] = (g * v / norm).to(gv["v"].dtype)
    return out


def _codec_weight_normed(name: str) -> str | None:
    """How upstream stores a codec weight: 'param' (parametrizations), 'legacy' (weight_g/v) or None."""
    if re.search(r"quantizers\.\d+\.(in_proj|out_proj)\.weight$", name):
        return "legacy"
    if name.endswith(".conv.weight"):
        return "param"
    return None


def export_codec_state(codec: Codec) -> dict[str, Tensor]:
    """voxbox codec -> the upstream ``codec.pth`` layout (weight norm un-folded, g = ||w||)."""
    out: dict[str, Tensor] = {}
    for k, t in codec.state_dict().items():
        kind = _codec_weight_normed(k)
        if kind is None:
            out[k] = t.clone()
            continue
        g = t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))
        base = k[: -len(".weight")]
        if kind == "param":
            out[base + ".parametrizations.weight.original0"] = g.clone()
            out[base + ".parametrizations.weight.original1"] = t.clone()
        else:
            out[base + ".weight_g"] = g.clone()
            out[base + ".weight_v"] = t.clone()
    return out


def load_codec(files: ModelFiles, cfg: CodecConfig, *, device: torch.device, dtype: torch.dtype) -> Codec:
    if files.codec is None:
        raise FileNotFoundError(f"{files.root} has no codec.pth")
    state = torch.load(files.codec, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if any(k.startswith("generator.") for k in state):
        state = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
    state = fold_weight_norm(state)
    with torch.device("meta"):
        codec = Codec(cfg)
    expected = codec.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise KeyError(f"codec.pth lacks {len(missing)} tensors for this codec config, e.g. {missing[:4]}")
    picked = {}
    for k, ref in expected.items():
        t = state[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"codec.pth: {k} has shape {tuple(t.shape)}, codec config says {tuple(ref.shape)}")
        picked[k] = t.to(device=device, dtype=dtype)
    codec.load_state_dict(picked, strict=True, assign=True)
    return codec.eval().requires_grad_(False)


def random_codec(cfg: CodecConfig, *, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Codec:
    with torch.device(device):
        codec = Codec(cfg).to(dtype)
    return init_random_(codec, seed).eval().requires_grad_(False)


# ---------------------------------------------------------------------- writing (tests, benches)
def export_dual_ar_state(slow: SlowAR, fast: FastAR) -> dict[str, Tensor]:
    """voxbox modules -> upstream tensor names (w13 split back into w1/w3)."""
    out: dict[str, Tensor] = {}
    for prefix, mod in ((SLOW_PREFIX, slow), (FAST_PREFIX, fast)):
        for k, t in mod.state_dict().items():
            if k.endswith("feed_forward.w13.weight"):
                w1, w3 = t.chunk(2, dim=0)
                base = k[: -len("w13.weight")]
                out[prefix + base + "w1.weight"] = w1.contiguous()
                out[prefix + base + "w3.weight"] = w3.contiguous()
            else:
                out[prefix + k] = t.contiguous()
    return out


def save_dual_ar_shards(state: dict[str, Tensor], root: Path, shards: int) -> None:
    """Upstream-named tensors -> ``model-0000i-of-0000N.safetensors`` shards and their index."""
    from safetensors.torch import save_file

    names = sorted(state)
    per = max(1, -(-len(names) // shards))
    weight_map = {}
    for i in range(shards):
        part = names[i * per : (i + 1) * per]
        if not part:
            continue
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k].cpu() for k in part}, str(root / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


def write_checkpoint(
    model_dir: str | Path, cfg: DualARConfig, codec_cfg: CodecConfig, *, seed: int = 0, shards: int = 2,
    dtype: torch.dtype = torch.float32, codec_config_file: bool = True,
) -> dict[str, Any]:
    """Write random weights in the upstream layout (config.json, sharded safetensors + index,
    codec.pth). The tokenizer is the caller's. Returns the voxbox-named tensors for comparisons."""
    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    slow = init_random_(SlowAR(cfg.text), seed).to(dtype)
    fast = init_random_(FastAR(cfg.fast), seed + 1).to(dtype)
    # Embeddings at unit scale, as trained token embeddings are far larger than 0.02.
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 2)
        slow.embeddings.weight.normal_(0, 0.15, generator=g)  # logits of a few units: varied samples
        fast.codebook_embeddings.weight.normal_(0, 1.0, generator=g)
        fast.embeddings.weight.normal_(0, 1.0, generator=g)
    save_dual_ar_shards(export_dual_ar_state(slow, fast), root, shards)
    (root / "config.json").write_text(json.dumps(cfg.to_json(), indent=1))
    codec = init_random_(Codec(codec_cfg), seed + 3)
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 4)
        for name, p in codec.named_parameters():
            if name.endswith("codebook.weight"):
                p.normal_(0, 1.0, generator=g)
            elif name.endswith(".conv.weight") or re.search(r"(in|out)_proj\.weight$", name):
                p.normal_(0, 1.0 / max(1, p[0].numel()) ** 0.5, generator=g)
    torch.save(export_codec_state(codec), root / "codec.pth")
    if codec_config_file:
        (root / "codec_config.json").write_text(json.dumps(codec_cfg.to_dict(), indent=1))
    return {"slow": slow, "fast": fast, "codec": codec}
