"""Give the Whisper peers the same weights voxbox runs: bundled CTranslate2 -> HF -> peer formats.

openai-whisper and whisper.cpp fetch their weights from hubs on first use, which fails offline
and would compare different weights anyway. Instead:

1. ``voxbox.convert.ct2_reader`` reads the bundled CTranslate2 ``model.bin`` into a Hugging Face
   ``WhisperForConditionalGeneration`` state dict;
2. ``hf_to_openai`` renames it to openai-whisper's checkpoint layout (the inverse of the
   mapping transformers uses to import openai checkpoints) with the ``dims`` openai-whisper wants;
3. ``write_ggml`` writes whisper.cpp's ggml file from that checkpoint, in the layout of
   whisper.cpp's ``convert-pt-to-ggml.py`` (hparams, mel filters, tokenizer, tensors; f16 for
   2-D weights, f32 for biases, norms, conv biases and positional embeddings).

Results are cached next to the clip cache, keyed by the SHA-256 of ``model.bin``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.bench.peers.base import NotInstalled
from voxbox.paths import cache_dir

__all__ = ["ensure_ggml", "ensure_openai_checkpoint", "hf_state_dict_from_ct2", "hf_to_openai", "write_ggml"]

# HF name fragment -> openai-whisper name fragment, applied in order: the inverse of the mapping
# transformers uses to import openai checkpoints (convert_openai_to_hf.py).
_HF_TO_OPENAI = (
    ("encoder.embed_positions.weight", "encoder.positional_embedding"),
    ("decoder.embed_positions.weight", "decoder.positional_embedding"),
    ("encoder.layer_norm.", "encoder.ln_post."),
    ("decoder.layer_norm.", "decoder.ln."),
    (".layers.", ".blocks."),
    (".self_attn_layer_norm.", ".attn_ln."),
    (".encoder_attn_layer_norm.", ".cross_attn_ln."),
    (".final_layer_norm.", ".mlp_ln."),
    (".self_attn.q_proj.", ".attn.query."),
    (".self_attn.k_proj.", ".attn.key."),
    (".self_attn.v_proj.", ".attn.value."),
    (".self_attn.out_proj.", ".attn.out."),
    (".encoder_attn.q_proj.", ".cross_attn.query."),
    (".encoder_attn.k_proj.", ".cross_attn.key."),
    (".encoder_attn.v_proj.", ".cross_attn.value."),
    (".encoder_attn.out_proj.", ".cross_attn.out."),
    (".fc1.", ".mlp.0."),
    (".fc2.", ".mlp.2."),
    ("decoder.embed_tokens.", "decoder.token_embedding."),
)


def _cache_root() -> Path:
    p = cache_dir() / "bench" / "peer-weights"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _model_key(ct2_dir: Path) -> str:
    h = hashlib.sha256()
    with open(ct2_dir / "model.bin", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # torch tensor
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def hf_state_dict_from_ct2(ct2_dir: Path) -> dict[str, np.ndarray]:
    """HF Whisper state dict (numpy, float16/float32 as stored) of a CTranslate2 Whisper directory."""
    if importlib.util.find_spec("voxbox.convert.ct2_reader") is None:
        raise NotInstalled("not available: voxbox.convert.ct2_reader (CTranslate2 -> HF weights) is not in this build")
    from voxbox.convert.ct2_reader import read_model_bin, whisper_state_dict

    _spec, _rev, variables = read_model_bin(ct2_dir / "model.bin")
    out = whisper_state_dict(variables)
    return {k: _to_numpy(v) for k, v in out.items()}


def hf_to_openai(hf: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """(dims, state dict) in openai-whisper's checkpoint layout from an HF Whisper state dict."""
    sd: dict[str, np.ndarray] = {}
    for key, value in hf.items():
        if key == "proj_out.weight":  # tied to the token embedding in openai-whisper
            continue
        k = key[len("model.") :] if key.startswith("model.") else key
        for h, o in _HF_TO_OPENAI:
            k = k.replace(h, o)
        sd[k] = value
    need = (
        "encoder.conv1.weight",
        "encoder.positional_embedding",
        "decoder.token_embedding.weight",
        "decoder.positional_embedding",
    )
    missing = [n for n in need if n not in sd]
    if missing:
        raise ValueError(f"not a Whisper state dict: missing {', '.join(missing)}")
    n_audio_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.blocks\.(\d+)\.", k)))
    n_text_layer = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"decoder\.blocks\.(\d+)\.", k)))
    n_audio_ctx, n_audio_state = sd["encoder.positional_embedding"].shape
    n_text_ctx, n_text_state = sd["decoder.positional_embedding"].shape
    dims = {
        "n_mels": int(sd["encoder.conv1.weight"].shape[1]),
        "n_vocab": int(sd["decoder.token_embedding.weight"].shape[0]),
        "n_audio_ctx": int(n_audio_ctx),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": int(n_audio_state) // 64,  # every Whisper size uses 64-dim heads
        "n_audio_layer": n_audio_layer,
        "n_text_ctx": int(n_text_ctx),
        "n_text_state": int(n_text_state),
        "n_text_head": int(n_text_state) // 64,
        "n_text_layer": n_text_layer,
    }
    return dims, sd


def ensure_openai_checkpoint(ct2_dir: Path) -> Path:
    """Path of an openai-whisper ``.pt`` checkpoint holding the weights of ``ct2_dir`` (cached)."""
    out = _cache_root() / f"openai-whisper-{_model_key(ct2_dir)}.pt"
    if out.exists():
        return out
    import torch

    dims, sd = hf_to_openai(hf_state_dict_from_ct2(ct2_dir))
    ckpt = {"dims": dims, "model_state_dict": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}}
    tmp = out.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, out)
    return out


def _whisper_assets() -> Path:
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise NotInstalled(
            "not installed: whisper.cpp's ggml conversion uses openai-whisper's tokenizer and mel "
            "assets (pip install --no-deps openai-whisper)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def write_ggml(dims: dict[str, int], sd: dict[str, np.ndarray], out: Path, use_f16: bool = True) -> Path:
    """Write whisper.cpp's ggml model file (legacy 'ggml' magic layout) for an openai-layout checkpoint."""
    assets = _whisper_assets()
    with np.load(assets / "mel_filters.npz") as f:
        filters = np.asarray(f[f"mel_{dims['n_mels']}"], dtype=np.float32)
    multilingual = dims["n_vocab"] >= 51865
    tok_file = assets / ("multilingual.tiktoken" if multilingual else "gpt2.tiktoken")
    tokens = [
        base64.b64decode(tok) for tok, _rank in (line.split() for line in tok_file.read_bytes().splitlines() if line)
    ]
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("i", 0x67676D6C))
        for key in (
            "n_vocab",
            "n_audio_ctx",
            "n_audio_state",
            "n_audio_head",
            "n_audio_layer",
            "n_text_ctx",
            "n_text_state",
            "n_text_head",
            "n_text_layer",
            "n_mels",
        ):
            f.write(struct.pack("i", int(dims[key])))
        f.write(struct.pack("i", int(use_f16)))
        f.write(struct.pack("ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("i", len(tokens)))
        for t in tokens:
            f.write(struct.pack("i", len(t)))
            f.write(t)
        for name, value in sd.items():
            data = np.asarray(value).squeeze()
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                data = data.reshape(data.shape[0], 1)
            n_dims = data.ndim
            small = n_dims < 2 or name in (
                "encoder.conv1.bias",
                "encoder.conv2.bias",
                "encoder.positional_embedding",
                "decoder.positional_embedding",
            )
            if use_f16 and not small:
                data, ftype = data.astype("<f2"), 1
            else:
                data, ftype = data.astype("<f4"), 0
            raw_name = name.encode()
            f.write(struct.pack("iii", n_dims, len(raw_name), ftype))
            for i in range(n_dims):
                f.write(struct.pack("i", data.shape[n_dims - 1 - i]))
            f.write(raw_name)
            f.write(np.ascontiguousarray(data).tobytes())
    os.replace(tmp, out)
    return out


def ensure_ggml(ct2_dir: Path) -> Path:
    """Path of a whisper.cpp ggml file (f16) holding the weights of ``ct2_dir`` (cached)."""
    out = _cache_root() / f"ggml-{_model_key(ct2_dir)}-f16.bin"
    if out.exists():
        return out
    dims, sd = hf_to_openai(hf_state_dict_from_ct2(ct2_dir))
    return write_ggml(dims, sd, out)
