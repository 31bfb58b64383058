"""Read a CTranslate2 Whisper ``model.bin`` back into a Hugging Face state dict and config.

The file layout is CTranslate2's (``ctranslate2/specs/model_spec.py``, ``ModelSpec._serialize``),
all little-endian::

    u32 binary_version (<= 6)   str spec_name   u32 spec_revision   u32 n_variables
    n_variables x { str name; u8 ndim; u32 dims[ndim]; u8 dtype; u32 nbytes; bytes data }
    u32 n_aliases x { str alias; str variable_name }          (version >= 2)

where ``str`` is ``u16 length-including-NUL, bytes, NUL`` and dtype ids are
float32=0, int8=1, int16=2, int32=3, float16=4, bfloat16=5. int8/int16 weights carry a per-row
``weight_scale`` (value = q / scale). Whisper's spec fuses self-attention Q/K/V into ``linear_0``
and cross-attention K/V into ``linear_1``; transformers' ``k_proj`` has no bias, so those bias
slices are dropped.

Used by tests (real tiny.en weights for the torch engine), by the bench and by convert helpers.
numpy only, plus torch/safetensors when writing a checkpoint directory.
"""

from __future__ import annotations

import json
import mmap
import re
import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_model_bin", "whisper_hf_config", "whisper_state_dict", "write_hf_checkpoint"]

_DTYPES: dict[int, Any] = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def _bytes(path: str | Path | Iterable[str | Path]) -> bytes | mmap.mmap:
    if isinstance(path, (str, Path)):
        with open(path, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return b"".join(Path(p).read_bytes() for p in path)  # a model.bin split into parts


def read_model_bin(path: str | Path | Iterable[str | Path]) -> tuple[str, int, dict[str, np.ndarray]]:
    """(spec name, spec revision, variables) of a CTranslate2 ``model.bin`` (or its parts, in order).

    Aliases resolve to the aliased array. bfloat16 arrays come back as float32.
    """
    buf = _bytes(path)
    off = 0

    def take(fmt: str):
        nonlocal off
        v = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v[0]

    def string() -> str:
        nonlocal off
        n = take("H")
        s = bytes(buf[off : off + n - 1]).decode("utf-8")
        off += n
        return s

    version = take("I")
    if version > 6:
        raise ValueError(f"unsupported CTranslate2 binary version {version}")
    name = string() if version >= 2 else ""
    revision = take("I") if version >= 2 else 1
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        vname = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype_id = take("B") if version >= 4 else 0
        nbytes = take("I") if version >= 4 else None
        dt = _DTYPES.get(dtype_id)
        if dt is None:
            raise ValueError(f"{vname}: unknown dtype id {dtype_id}")
        count = int(np.prod(shape)) if shape else 1
        arr: np.ndarray
        if dt == "bfloat16":
            raw = np.frombuffer(buf, dtype=np.uint16, count=count, offset=off)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
            size = count * 2
        else:
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=off).copy()
            size = arr.nbytes
        if nbytes is not None and nbytes != size:
            raise ValueError(f"{vname}: {nbytes} bytes stored, {size} expected")
        off += size
        variables[vname] = arr.reshape(shape)
    if version >= 2 and off < len(buf):
        for _ in range(take("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return name, revision, variables


def _dequantize(v: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    w = v[f"{prefix}/weight"]
    scale = v.get(f"{prefix}/weight_scale")
    if scale is not None and w.dtype in (np.int8, np.int16):
        s = scale.astype(np.float32)
        return w.astype(np.float32) / (s.reshape(-1, 1) if s.ndim else s)
    return w


def _layer_count(variables: dict[str, np.ndarray], part: str) -> int:
    layer = re.compile(rf"^{part}/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for m in map(layer.match, variables) if m), default=-1)


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CTranslate2 WhisperSpec variables -> transformers ``WhisperForConditionalGeneration`` names."""
    v = variables
    sd: dict[str, np.ndarray] = {}

    def lin(ct2: str, hf: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = _dequantize(v, ct2)
        if bias:
            sd[f"{hf}.bias"] = v[f"{ct2}/bias"]

    def norm(ct2: str, hf: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = v[f"{ct2}/gamma"], v[f"{ct2}/beta"]

    def split(ct2: str, hfs: list[str | None]) -> None:
        w, b = _dequantize(v, ct2), v.get(f"{ct2}/bias")
        n = len(hfs)
        for i, hf in enumerate(hfs):
            if hf is None:
                continue
            sd[f"{hf}.weight"] = np.split(w, n)[i]
            if b is not None and not hf.endswith("k_proj"):
                sd[f"{hf}.bias"] = np.split(b, n)[i]

    def ffn(ct2: str, hf: str) -> None:
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        lin(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        lin(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    for part in ("encoder", "decoder"):
        norm(f"{part}/layer_norm", f"model.{part}.layer_norm")
        sd[f"model.{part}.embed_positions.weight"] = v[f"{part}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        lin(f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.decoder.embed_tokens.weight"] = _dequantize(v, "decoder/embeddings")
    counts = {part: _layer_count(v, part) for part in ("encoder", "decoder")}
    for i in range(counts["encoder"]):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split(
            f"{c}/self_attention/linear_0", [f"{h}.self_attn.q_proj", f"{h}.self_attn.k_proj", f"{h}.self_attn.v_proj"]
        )
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ffn(c, h)
    for i in range(counts["decoder"]):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split(
            f"{c}/self_attention/linear_0", [f"{h}.self_attn.q_proj", f"{h}.self_attn.k_proj", f"{h}.self_attn.v_proj"]
        )
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        lin(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        split(f"{c}/attention/linear_1", [f"{h}.encoder_attn.k_proj", f"{h}.encoder_attn.v_proj"])
        lin(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        ffn(c, h)
    return sd


def _special_ids(tokenizer_json: Path) -> dict[str, int]:
    data = json.loads(Path(tokenizer_json).read_text())
    return {t["content"]: t["id"] for t in data.get("added_tokens", [])}


def whisper_hf_config(
    variables: dict[str, np.ndarray], ct2_config: dict, tokenizer_json: str | Path
) -> tuple[dict, dict]:
    """(config.json, generation_config.json) for transformers from the spec and CT2's config.json."""
    v = variables
    ids = _special_ids(Path(tokenizer_json))
    d_model = int(v["decoder/embeddings/weight"].shape[1])
    n_enc, n_dec = _layer_count(v, "encoder"), _layer_count(v, "decoder")
    heads_enc = int(np.asarray(v.get("encoder/num_heads", d_model // 64)).reshape(()))
    heads_dec = int(np.asarray(v.get("decoder/num_heads", d_model // 64)).reshape(()))
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    no_ts = ids["<|notimestamps|>"]
    lang_ids = ct2_config.get("lang_ids") or []
    by_id = {i: c for c, i in ids.items()}
    config = {
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "vocab_size": int(v["decoder/embeddings/weight"].shape[0]),
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "d_model": d_model,
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": heads_enc,
        "decoder_attention_heads": heads_dec,
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "bos_token_id": eot,
        "pad_token_id": eot,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "suppress_tokens": ct2_config.get("suppress_ids"),
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin"),
    }
    generation = {
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "bos_token_id": eot,
        "pad_token_id": eot,
        "no_timestamps_token_id": no_ts,
        "max_initial_timestamp_index": 50,
        "max_length": config["max_target_positions"],
        "suppress_tokens": ct2_config.get("suppress_ids"),
        "begin_suppress_tokens": ct2_config.get("suppress_ids_begin"),
        "alignment_heads": ct2_config.get("alignment_heads"),
        "is_multilingual": len(lang_ids) > 1,
        "lang_to_id": {by_id[i]: i for i in lang_ids if i in by_id},
        "task_to_id": {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    }
    return config, generation


def write_hf_checkpoint(ct2_dir: str | Path, out_dir: str | Path, model_bin: Iterable[str | Path] | None = None,
                        dtype: str = "float32") -> Path:
    """Write ``out_dir`` with config.json, generation_config.json, model.safetensors, tokenizer.json
    from a CTranslate2 Whisper directory (``model_bin`` overrides ``ct2_dir/model.bin``, e.g. parts)."""
    import torch
    from safetensors.torch import save_file

    ct2_dir, out = Path(ct2_dir), Path(out_dir)
    name, _, variables = read_model_bin(model_bin if model_bin is not None else ct2_dir / "model.bin")
    if name and name != "WhisperSpec":
        raise ValueError(f"{ct2_dir} holds a {name}, not a WhisperSpec")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    config, generation = whisper_hf_config(variables, ct2_config, ct2_dir / "tokenizer.json")
    tdtype = getattr(torch, dtype)
    state = {k: torch.from_numpy(np.ascontiguousarray(a)).to(tdtype) for k, a in whisper_state_dict(variables).items()}
    out.mkdir(parents=True, exist_ok=True)
    config["torch_dtype"] = dtype
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps(generation, indent=1))
    shutil.copy(ct2_dir / "tokenizer.json", out / "tokenizer.json")
    return out
