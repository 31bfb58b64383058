"""Export a Hugging Face Whisper to two ONNX graphs with explicit KV caches.

``encoder.onnx``
    ``input_features`` [batch, n_mels, 3000] -> ``cross_k``, ``cross_v`` [layers, batch, heads, 1500, head_dim]:
    the encoder *and* every decoder layer's cross-attention key/value projections, computed once
    per 30-second window.

``decoder.onnx``
    ``input_ids`` [batch, tokens], ``past_k``/``past_v`` [layers, batch, heads, past, head_dim]
    (``past`` may be 0), ``cross_k``/``cross_v`` -> ``logits`` [batch, vocab] for the *last* token,
    ``present_k``/``present_v`` [layers, batch, heads, past + tokens, head_dim].

One decoder graph serves both the prompt (past = 0) and every following step, so there is no
separate "decoder without past" model to keep in sync.

The wrapper modules reuse the transformers modules' own submodules (embeddings, layer norms,
projections, the whole ``WhisperEncoder``) and only spell out the attention with the caches as
plain tensors, which keeps the traced graph free of transformers' Cache objects.

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter). torch >= 2.9
defaults to the dynamo exporter, which needs the separate ``onnxscript`` package and specialises
sizes of 0/1 (an empty past cache is exactly such a size); the TorchScript exporter is part of
torch itself, handles the dynamic axes declared below, and gives graphs ONNX Runtime runs on every
execution provider. Dynamic int8 quantization uses ``onnxruntime.quantization.quantize_dynamic``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from voxbox.errors import EngineUnavailableError, ModelLoadError

__all__ = ["ONNX_QUANTIZATIONS", "export_onnx", "quantize_onnx_dir"]

ONNX_QUANTIZATIONS = ("int8",)
OPSET = 17
N_FRAMES = 3000


def _torch_modules():
    try:
        import torch
        import transformers  # noqa: F401
        from torch import nn
    except ImportError as exc:
        raise EngineUnavailableError(
            f"ONNX export needs torch and transformers ({exc.name} missing)",
            install_hint="pip install torch 'voxbox[convert]'",
        ) from None
    return torch, nn


def _build_wrappers(model: Any) -> tuple[Any, Any]:
    """(encoder, decoder) export wrappers around a transformers Whisper (eval mode)."""
    return _encoder_wrapper(model).eval(), _decoder_wrapper(model).eval()


def _encoder_wrapper(model: Any) -> Any:
    """features -> every decoder layer's cross-attention K and V, stacked (layers, B, H, S, Dh)."""
    torch, _ = _torch_modules()
    from torch import nn

    cfg = model.config
    n_heads = cfg.decoder_attention_heads
    head_dim = cfg.d_model // n_heads

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = model.model.encoder
            self.layers = model.model.decoder.layers

        def forward(self, input_features):
            h = self.encoder(input_features, return_dict=True).last_hidden_state
            b, s = h.shape[0], h.shape[1]
            ks, vs = [], []
            for layer in self.layers:
                attn = layer.encoder_attn
                ks.append(attn.k_proj(h).view(b, s, n_heads, head_dim).transpose(1, 2))
                vs.append(attn.v_proj(h).view(b, s, n_heads, head_dim).transpose(1, 2))
            return torch.stack(ks), torch.stack(vs)

    return Encoder()


def _decoder_wrapper(model: Any) -> Any:
    """tokens + explicit past K/V + cross K/V -> last-token logits and the new past K/V (one
    nested module: the traced forward must be a single method)."""
    torch, _ = _torch_modules()
    import torch.nn.functional as F
    from torch import nn

    cfg = model.config
    n_heads = cfg.decoder_attention_heads
    head_dim = cfg.d_model // n_heads

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dec = model.model.decoder
            self.embed_tokens = dec.embed_tokens
            self.embed_positions = dec.embed_positions
            self.layers = dec.layers
            self.layer_norm = dec.layer_norm
            self.proj_weight = model.proj_out.weight

        @staticmethod
        def _attend(q, k, v, mask=None):
            w = torch.matmul(q, k.transpose(-1, -2))
            if mask is not None:
                w = w + mask
            return torch.matmul(torch.softmax(w, dim=-1), v)

        def forward(self, input_ids, past_k, past_v, cross_k, cross_v):
            b, t = input_ids.shape[0], input_ids.shape[1]
            past = past_k.shape[3]
            total = past + t
            pos = self.embed_positions.weight[past:total]
            x = self.embed_tokens(input_ids) + pos.unsqueeze(0)
            key_pos = torch.arange(0, total, device=input_ids.device)
            query_pos = torch.arange(0, t, device=input_ids.device) + past
            mask = (key_pos.unsqueeze(0) > query_pos.unsqueeze(1)).to(x.dtype) * torch.finfo(x.dtype).min
            presents_k, presents_v = [], []
            for i, layer in enumerate(self.layers):
                sa = layer.self_attn
                h = layer.self_attn_layer_norm(x)
                q = (sa.q_proj(h) * sa.scaling).view(b, t, n_heads, head_dim).transpose(1, 2)
                k = torch.cat([past_k[i], sa.k_proj(h).view(b, t, n_heads, head_dim).transpose(1, 2)], dim=2)
                v = torch.cat([past_v[i], sa.v_proj(h).view(b, t, n_heads, head_dim).transpose(1, 2)], dim=2)
                presents_k.append(k)
                presents_v.append(v)
                a = self._attend(q, k, v, mask).transpose(1, 2).reshape(b, t, n_heads * head_dim)
                x = x + sa.out_proj(a)

                ca = layer.encoder_attn
                h = layer.encoder_attn_layer_norm(x)
                q = (ca.q_proj(h) * ca.scaling).view(b, t, n_heads, head_dim).transpose(1, 2)
                a = self._attend(q, cross_k[i], cross_v[i]).transpose(1, 2).reshape(b, t, n_heads * head_dim)
                x = x + ca.out_proj(a)

                h = layer.final_layer_norm(x)
                x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
            x = self.layer_norm(x)
            # 2-D input -> a single Gemm sharing the (tied) embedding initializer.
            logits = F.linear(x[:, -1, :], self.proj_weight)
            return logits, torch.stack(presents_k), torch.stack(presents_v)

    return Decoder()


def load_hf_whisper(path: Path, dtype: str = "float32"):
    """Load a transformers Whisper in eager attention (what the export wrappers expect)."""
    torch, _ = _torch_modules()
    from transformers import WhisperForConditionalGeneration

    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            str(path), dtype=getattr(torch, dtype), attn_implementation="eager"
        )
    except Exception as exc:
        raise ModelLoadError(f"could not load {path} with transformers: {' '.join(str(exc).split())}") from exc
    return model.eval()


def export_onnx(src: Path, out: Path) -> dict[str, Any]:
    """Export ``src`` (HF Whisper dir) to ``out/encoder.onnx`` and ``out/decoder.onnx`` (float32)."""
    torch, _ = _torch_modules()
    model = load_hf_whisper(src)
    cfg = model.config
    encoder, decoder = _build_wrappers(model)
    n_layers, n_heads = cfg.decoder_layers, cfg.decoder_attention_heads
    head_dim = cfg.d_model // n_heads
    out.mkdir(parents=True, exist_ok=True)

    feats = torch.zeros(1, cfg.num_mel_bins, N_FRAMES, dtype=torch.float32)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cross_k, cross_v = encoder(feats)
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        (tmp / "enc").mkdir()
        (tmp / "dec").mkdir()
        torch.onnx.export(
            encoder, (feats,), str(tmp / "enc" / "encoder.onnx"),
            dynamo=False, opset_version=OPSET,
            input_names=["input_features"], output_names=["cross_k", "cross_v"],
            dynamic_axes={"input_features": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}},
        )
        ids = torch.full((1, 2), int(cfg.decoder_start_token_id or 0), dtype=torch.int64)
        past = torch.zeros(n_layers, 1, n_heads, 3, head_dim, dtype=torch.float32)
        torch.onnx.export(
            decoder, (ids, past, past.clone(), cross_k, cross_v), str(tmp / "dec" / "decoder.onnx"),
            dynamo=False, opset_version=OPSET,
            input_names=["input_ids", "past_k", "past_v", "cross_k", "cross_v"],
            output_names=["logits", "present_k", "present_v"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "tokens"},
                "past_k": {1: "batch", 3: "past"},
                "past_v": {1: "batch", 3: "past"},
                "cross_k": {1: "batch", 3: "frames"},
                "cross_v": {1: "batch", 3: "frames"},
                "logits": {0: "batch"},
                "present_k": {1: "batch", 3: "total"},
                "present_v": {1: "batch", 3: "total"},
            },
        )
    try:
        _finalize_graph(tmp / "enc" / "encoder.onnx", out / "encoder.onnx")
        _finalize_graph(tmp / "dec" / "decoder.onnx", out / "decoder.onnx",
                        tie=(cfg.d_model, cfg.vocab_size))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "head_dim": head_dim,
        "d_model": cfg.d_model,
        "n_mels": cfg.num_mel_bins,
        "vocab_size": cfg.vocab_size,
        "max_target_positions": cfg.max_target_positions,
        "max_source_positions": cfg.max_source_positions,
        "params": sum(p.numel() for p in model.parameters()),
    }


#: Graphs whose weights exceed this are saved with one external ``<graph>.onnx.data`` file
#: (protobuf cannot hold 2 GiB); smaller graphs are a single self-contained file.
EXTERNAL_DATA_BYTES = 1_900_000_000


def graph_bytes(path: Path) -> int:
    """Size of an ONNX graph including the external data files it references."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    m = onnx.load(str(path), load_external_data=False)
    files = {ExternalDataInfo(t).location for t in m.graph.initializer if uses_external_data(t)}
    return path.stat().st_size + sum((path.parent / f).stat().st_size for f in files if (path.parent / f).is_file())


def save_graph(model: Any, path: Path, nbytes: int) -> None:
    """Save ``model`` to ``path``, weights inline or (when big) in ``path.name + ".data"``."""
    import onnx

    data = path.parent / (path.name + ".data")
    if data.exists():
        data.unlink()
    if nbytes >= EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _finalize_graph(src: Path, dst: Path, tie: tuple[int, int] | None = None) -> None:
    """Load an exported graph (with any per-tensor external files), optionally tie the output
    projection, and save it to ``dst`` in voxbox's layout (see :func:`save_graph`)."""
    import onnx

    nbytes = graph_bytes(src)
    m = onnx.load(str(src), load_external_data=True)
    if tie is not None:
        nbytes -= _tie_output_projection(m, *tie)
    save_graph(m, dst, nbytes)


def _tie_output_projection(m: Any, d_model: int, vocab: int) -> int:
    """Constant folding stores the output projection twice (embedding + its transpose): use one.

    The ``MatMul(x, W^T)`` that makes the logits becomes ``Gemm(x, W, transB=1)`` on the embedding
    initializer, halving the vocabulary-sized weights on disk and in memory. Returns bytes saved.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in m.graph.initializer}
    emb = next((i for i in m.graph.initializer if list(i.dims) == [vocab, d_model]), None)
    if emb is None:
        return 0
    for idx, node in enumerate(m.graph.node):
        if node.op_type != "MatMul" or node.input[1] not in inits:
            continue
        w = inits[node.input[1]]
        if list(w.dims) != [d_model, vocab]:
            continue
        if not np.array_equal(numpy_helper.to_array(w).T, numpy_helper.to_array(emb)):
            return 0
        gemm = helper.make_node(
            "Gemm", [node.input[0], emb.name], list(node.output), name=node.name + "_tied", transB=1
        )
        m.graph.node.remove(node)
        m.graph.node.insert(idx, gemm)
        m.graph.initializer.remove(w)
        return d_model * vocab * 4
    return 0


def _untie_for_quantization(src: Path, dst: Path) -> Path:
    """Give the tied output projection its own initializer again before quantizing.

    onnxruntime's quantizer mis-infers shapes when one initializer feeds both the embedding
    ``Gather`` and the transposed ``Gemm`` (the session then fails with "Incompatible dimensions");
    separate copies quantize cleanly, and each becomes int8 so the result is still small.
    """
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(src), load_external_data=True)
    inits = {i.name: i for i in m.graph.initializer}
    gather_inputs = {n.input[0] for n in m.graph.node if n.op_type == "Gather"}
    changed = False
    for node in m.graph.node:
        if node.op_type == "Gemm" and node.input[1] in inits and node.input[1] in gather_inputs:
            w = inits[node.input[1]]
            copy = numpy_helper.from_array(numpy_helper.to_array(w).copy(), w.name + "_proj_out")
            m.graph.initializer.append(copy)
            node.input[1] = copy.name
            changed = True
    if not changed:
        return src
    save_graph(m, dst, graph_bytes(src))
    return dst


def quantize_onnx_dir(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (weights int8, activations quantized at run time) of both graphs."""
    import logging
    import tempfile

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EngineUnavailableError(
            f"int8 quantization needs onnxruntime ({exc})", install_hint="pip install onnxruntime"
        ) from None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing suggestion per graph at WARNING
    try:
        with tempfile.TemporaryDirectory(prefix="voxbox-quant-") as tmp:
            for name in ("encoder.onnx", "decoder.onnx"):
                model_in = _untie_for_quantization(src / name, Path(tmp) / name)
                big = graph_bytes(model_in) // 4 >= EXTERNAL_DATA_BYTES  # int8 weights: a quarter
                try:
                    quantize_dynamic(
                        str(model_in), str(dst / name),
                        weight_type=QuantType.QInt8,
                        use_external_data_format=big,
                        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
                        extra_options={"MatMulConstBOnly": True},
                    )
                except Exception as exc:
                    raise ModelLoadError(f"int8 quantization of {name} failed: {' '.join(str(exc).split())}") from exc
    finally:
        root.setLevel(level)


def write_onnx_config(out: Path, info: dict[str, Any], ckpt_config: dict[str, Any], generation_config: dict[str, Any],
                      special_ids: dict[str, int], quantization: str) -> None:
    """``voxbox_onnx.json``: everything the onnx-whisper engine needs besides the graphs and tokenizer."""
    data = dict(info)
    data["format"] = "voxbox-onnx-whisper/1"
    data["dtype"] = "int8" if quantization == "int8" else "float32"
    data["special_ids"] = special_ids
    data["generation"] = {
        k: generation_config[k]
        for k in ("suppress_tokens", "begin_suppress_tokens", "lang_to_id", "task_to_id", "is_multilingual",
                  "no_timestamps_token_id", "decoder_start_token_id", "max_initial_timestamp_index", "eos_token_id")
        if k in generation_config
    }
    if "suppress_tokens" not in data["generation"] and ckpt_config.get("suppress_tokens") is not None:
        data["generation"]["suppress_tokens"] = ckpt_config["suppress_tokens"]
    if "begin_suppress_tokens" not in data["generation"] and ckpt_config.get("begin_suppress_tokens") is not None:
        data["generation"]["begin_suppress_tokens"] = ckpt_config["begin_suppress_tokens"]
    data["decoder_start_token_id"] = ckpt_config.get("decoder_start_token_id")
    data["eos_token_id"] = ckpt_config.get("eos_token_id")
    (out / "voxbox_onnx.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def copy_files(files: list[Path], out: Path) -> list[str]:
    names = []
    for f in files:
        shutil.copy2(f, out / f.name)
        names.append(f.name)
    return names
