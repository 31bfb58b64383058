"""Write whisper.cpp's ggml model file from a Whisper state dict, offline.

The layout is whisper.cpp's legacy ``ggml`` file (what its ``convert-pt-to-ggml.py`` writes)::

    i32 magic 0x67676d6c ("ggml")
    i32 n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer n_text_ctx n_text_state
        n_text_head n_text_layer n_mels ftype
    i32 n_mels, i32 n_fft_bins, f32[n_mels * n_fft_bins]      mel filterbank
    i32 n_tokens, n_tokens x { i32 len, bytes }                the byte-level BPE vocabulary
    tensors: { i32 n_dims, i32 name_len, i32 ftype; i32 dims[n_dims] (innermost first); name; data }

whisper.cpp's converter takes the mel filters and the vocabulary from openai-whisper's assets;
here they come from what every voxbox install has: the Slaney mel filterbank that faster-whisper
computes (librosa's ``filters.mel(sr=16000, n_fft=400)``) and the checkpoint's own
``tokenizer.json`` (GPT-2 byte-level BPE strings mapped back to bytes). Tensor names are
openai-whisper's (:func:`hf_to_openai` renames a Hugging Face state dict).
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "GGML_MAGIC", "GGML_TYPES", "bundled_ggml", "byte_vocab", "ggml_dims", "hf_to_openai", "is_ggml_file",
    "mel_filterbank", "write_ggml",
]

GGML_MAGIC = 0x67676D6C
GGML_TYPES = ("float16", "float32")  # what this writer produces (whisper.cpp's quantize tool makes q5/q8)
_CONV_BIASES = ("encoder.conv1.bias", "encoder.conv2.bias")
_F32_ALWAYS = (*_CONV_BIASES, "encoder.positional_embedding", "decoder.positional_embedding")

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


def hf_to_openai(hf: dict[str, np.ndarray]) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """(dims, state dict) in openai-whisper's checkpoint layout from an HF Whisper state dict."""
    sd: dict[str, np.ndarray] = {}
    for key, value in hf.items():
        if key == "proj_out.weight":  # tied to the token embedding in openai-whisper
            continue
        k = key.removeprefix("model.")
        for h, o in _HF_TO_OPENAI:
            k = k.replace(h, o)
        sd[k] = value
    return ggml_dims(sd), sd


def ggml_dims(sd: dict[str, np.ndarray]) -> dict[str, int]:
    """openai-whisper's ``dims`` from an openai-layout state dict."""
    need = ("encoder.conv1.weight", "encoder.positional_embedding", "decoder.token_embedding.weight",
            "decoder.positional_embedding")
    missing = [n for n in need if n not in sd]
    if missing:
        raise ValueError(f"not a Whisper state dict: missing {', '.join(missing)}")
    n_audio_ctx, n_audio_state = sd["encoder.positional_embedding"].shape
    n_text_ctx, n_text_state = sd["decoder.positional_embedding"].shape
    return {
        "n_mels": int(sd["encoder.conv1.weight"].shape[1]),
        "n_vocab": int(sd["decoder.token_embedding.weight"].shape[0]),
        "n_audio_ctx": int(n_audio_ctx),
        "n_audio_state": int(n_audio_state),
        "n_audio_head": int(n_audio_state) // 64,  # every Whisper size uses 64-dim heads
        "n_audio_layer": 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"encoder\.blocks\.(\d+)\.", k))),
        "n_text_ctx": int(n_text_ctx),
        "n_text_state": int(n_text_state),
        "n_text_head": int(n_text_state) // 64,
        "n_text_layer": 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"decoder\.blocks\.(\d+)\.", k))),
    }


def mel_filterbank(n_mels: int) -> np.ndarray:
    """Whisper's Slaney mel filterbank, (n_mels, 201) float32 (faster-whisper computes it)."""
    from faster_whisper.feature_extractor import FeatureExtractor

    return np.asarray(FeatureExtractor.get_mel_filters(16000, 400, n_mels), dtype=np.float32)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte map (the inverse of ``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def byte_vocab(tokenizer_json: str | Path) -> list[bytes]:
    """The ordinary (non-special) tokens of a Whisper ``tokenizer.json`` as bytes, by id: what
    whisper.cpp reads (it adds the special tokens itself, from ``n_vocab``)."""
    data = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))
    vocab: dict[str, int] = data["model"]["vocab"]
    specials = {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    eot = specials.get("<|endoftext|>", vocab.get("<|endoftext|>"))
    if eot is None:
        raise ValueError(f"{tokenizer_json} has no <|endoftext|> token: not a Whisper tokenizer")
    dec = _byte_decoder()
    by_id: dict[int, bytes] = {}
    for tok, i in vocab.items():
        if i < eot:
            by_id[i] = bytes(dec[ch] for ch in tok)
    if sorted(by_id) != list(range(eot)):
        raise ValueError(f"{tokenizer_json}: ordinary token ids are not 0..{eot - 1}")
    return [by_id[i] for i in range(eot)]


def _tensor(f: Any, name: str, value: np.ndarray, use_f16: bool) -> None:
    data = np.asarray(value).squeeze()
    if name in _CONV_BIASES:
        data = data.reshape(data.shape[0], 1)
    if use_f16 and data.ndim >= 2 and name not in _F32_ALWAYS:
        data, ftype = data.astype("<f2"), 1
    else:
        data, ftype = data.astype("<f4"), 0
    raw = name.encode()
    f.write(struct.pack("iii", data.ndim, len(raw), ftype))
    for i in range(data.ndim):
        f.write(struct.pack("i", data.shape[data.ndim - 1 - i]))
    f.write(raw)
    f.write(np.ascontiguousarray(data).tobytes())


def write_ggml(dims: dict[str, int], sd: dict[str, np.ndarray], tokens: list[bytes], out: str | Path,
               use_f16: bool = True) -> Path:
    """Write the ggml file ``out`` (atomically) for an openai-layout state dict and its vocabulary."""
    out = Path(out)
    filters = mel_filterbank(dims["n_mels"])
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("i", GGML_MAGIC))
        f.writelines(
            struct.pack("i", int(dims[key]))
            for key in (
                "n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
                "n_text_state", "n_text_head", "n_text_layer", "n_mels",
            )
        )
        f.write(struct.pack("i", int(use_f16)))
        f.write(struct.pack("ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("i", len(tokens)))
        for t in tokens:
            f.write(struct.pack("i", len(t)))
            f.write(t)
        for name, value in sd.items():
            _tensor(f, name, value, use_f16)
    os.replace(tmp, out)
    return out


def is_ggml_file(path: str | Path) -> bool:
    """The file starts with whisper.cpp's ggml magic."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<i", head)[0] == GGML_MAGIC


def _safetensors_state_dict(src: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    files = sorted(src.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{src} has no *.safetensors weights")
    out: dict[str, np.ndarray] = {}
    for fn in files:
        with safe_open(str(fn), framework="pt") as f:  # pt: reads bfloat16 checkpoints too
            for k in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                out[k] = f.get_tensor(k).float().numpy()
    return out


def ggml_from_hf(src: str | Path, out: str | Path, use_f16: bool = True) -> Path:
    """A ggml file from a Hugging Face Whisper checkpoint directory (safetensors + tokenizer.json)."""
    src = Path(src)
    dims, sd = hf_to_openai(_safetensors_state_dict(src))
    return write_ggml(dims, sd, byte_vocab(src / "tokenizer.json"), out, use_f16)


def ggml_from_ct2(ct2_dir: str | Path, out: str | Path, use_f16: bool = True) -> Path:
    """A ggml file from a CTranslate2 Whisper directory (model.bin + tokenizer.json), e.g. the bundled tiny.en."""
    from voxbox.convert.ct2_reader import read_model_bin, whisper_state_dict

    ct2_dir = Path(ct2_dir)
    _spec, _rev, variables = read_model_bin(ct2_dir / "model.bin")
    hf = {k: np.asarray(v.float().numpy() if hasattr(v, "float") else v, dtype=np.float32)
          for k, v in whisper_state_dict(variables).items()}
    dims, sd = hf_to_openai(hf)
    return write_ggml(dims, sd, byte_vocab(ct2_dir / "tokenizer.json"), out, use_f16)


def bundled_ggml(name: str = "tiny.en") -> Path:
    """The bundled CTranslate2 ``name`` (tiny.en or base) as a ggml f16 file, converted once into the
    cache and keyed by the verified weights' SHA-256 (the same weights faster-whisper runs)."""
    from voxbox.models import bundled

    ct2 = bundled.whisper_tiny_en_dir() if name == "tiny.en" else bundled.whisper_base_dir()
    key = bundled.sha256_file(ct2 / "model.bin")[:16]
    d = Path(bundled.cache_dir()) / "ggml"
    d.mkdir(parents=True, exist_ok=True)
    out = d / f"{name}-{key}-f16.bin"
    if not out.is_file():
        ggml_from_ct2(ct2, out)
    return out


#: bytes per block and elements per block of the ggml tensor types a whisper.cpp file may hold
_GGML_TYPE_SIZES = {0: (4, 1), 1: (2, 1), 2: (18, 32), 3: (20, 32), 6: (22, 32), 7: (24, 32), 8: (34, 32),
                    10: (84, 256), 11: (110, 256), 12: (144, 256), 13: (176, 256), 14: (210, 256), 30: (2, 1)}


def check_ggml_file(path: str | Path) -> dict[str, int]:
    """Walk a whisper.cpp ggml file's header, mel filters, vocabulary and tensor table without
    reading the weights; raise ValueError on anything short or inconsistent. whisper.cpp itself
    crashes (SIGSEGV) on a truncated file, so voxbox checks before handing one over."""
    path = Path(path)
    size = path.stat().st_size
    keys = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
            "n_text_state", "n_text_head", "n_text_layer", "n_mels", "ftype")
    with open(path, "rb") as f:
        def ints(n: int) -> tuple[int, ...]:
            raw = f.read(4 * n)
            if len(raw) != 4 * n:
                raise ValueError(f"{path.name} ends early (at byte {f.tell()} of {size})")
            return struct.unpack(f"<{n}i", raw)

        def skip(n: int) -> None:
            if n < 0 or f.tell() + n > size:
                raise ValueError(f"{path.name} ends early (needs {n} more bytes at byte {f.tell()} of {size})")
            f.seek(n, os.SEEK_CUR)

        if ints(1)[0] != GGML_MAGIC:
            raise ValueError(f"{path.name} is not a whisper.cpp ggml model (wrong magic)")
        hp = dict(zip(keys, ints(len(keys)), strict=True))
        n_mel, n_fft = ints(2)
        skip(4 * n_mel * n_fft)
        for _ in range(ints(1)[0]):
            skip(ints(1)[0])
        tensors = 0
        while f.tell() < size:
            n_dims, name_len, ttype = ints(3)
            if not 0 < n_dims <= 4 or not 0 < name_len < 256 or ttype not in _GGML_TYPE_SIZES:
                raise ValueError(f"{path.name}: bad tensor record at byte {f.tell() - 12} "
                                 f"(dims {n_dims}, name length {name_len}, type {ttype})")
            n = 1
            for d in ints(n_dims):
                n *= d
            skip(name_len)
            block_bytes, block = _GGML_TYPE_SIZES[ttype]
            skip(n // block * block_bytes)
            tensors += 1
    if tensors == 0:
        raise ValueError(f"{path.name} holds no tensors")
    hp["tensors"] = tensors
    return hp
