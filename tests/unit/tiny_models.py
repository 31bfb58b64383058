"""Tiny random models in the upstream layouts, built at test time with the ``onnx`` package.

Kokoro (kokoro-onnx's layout): a graph with the real input/output names and dtypes (``tokens`` or
``input_ids`` int64 [1, T], ``style`` float32 [1, 256], ``speed`` float32 [1] -> waveform float32
[N] and, for the timed export, ``duration`` int64 [T]) and a ``voices-v1.0.bin`` npz of
[510, 1, 256] voices. The waveform is 600 samples per predicted frame, like the real model.

Parakeet (onnx-asr's NeMo layout): ``encoder-model.onnx`` (``audio_signal`` [B, F, T], ``length``
[B] -> ``outputs`` [B, D, ceil(T/8)], ``encoded_lengths``), ``decoder_joint-model.onnx``
(``encoder_outputs`` [B, D, 1], ``targets`` int32 [B, 1], ``target_length`` int32 [B],
``input_states_1/2`` [2, B, H] -> ``outputs`` [B, 1, 1, V + 5], ``prednet_lengths``,
``output_states_1/2``), or ``model.onnx`` for CTC (-> ``logprobs`` [B, T', V]); ``vocab.txt``
("token id" lines, ``<blk>`` last) and ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
VOICES = ("af_heart", "af_bella", "af_sky", "bm_george")
VOCAB_V1 = json.loads((Path(__file__).parents[2] / "src/voxbox/engines/tts/kokoro/vocab_v1.json")
                      .read_text(encoding="utf-8"))["vocab"]


def _init(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _const(name: str, value: object, dtype: type = np.float32) -> onnx.TensorProto:
    return _init(name, np.array(value, dtype=dtype))


def kokoro_graph(path: Path, *, timed: bool = True, seed: int = 0, hop: int = 600) -> Path:
    rng = np.random.default_rng(seed)
    ids = "input_ids" if timed else "tokens"
    out_audio = "waveform" if timed else "audio"
    inits = [
        _init("E", rng.normal(0, 1, (178, 8)).astype(np.float32)),
        _init("Ws", rng.normal(0, 0.2, (256, 8)).astype(np.float32)),
        _init("Wd", rng.normal(0, 1, (8, 1)).astype(np.float32)),
        _const("four", 4.0), _const("half", 0.5), _const("one_f", 1.0), _const("hop", hop, np.int64),
        _const("zero_i", 0, np.int64), _const("one_i", 1, np.int64), _const("amp", 0.3), _const("f0", 0.02),
        _const("f1", 0.08), _const("ax0", [0], np.int64), _const("ax2", [2], np.int64),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["E", ids], ["emb"], axis=0),  # [1, T, 8]
        n("MatMul", ["style", "Ws"], ["sp"]),  # [1, 8]
        n("Unsqueeze", ["sp", "ax0"], ["sp3"]),  # [1, 1, 8]
        n("Add", ["emb", "sp3"], ["pre"]),
        n("Tanh", ["pre"], ["h"]),
        n("MatMul", ["h", "Wd"], ["dl"]),  # [1, T, 1]
        n("Sigmoid", ["dl"], ["ds"]),
        n("Mul", ["ds", "four"], ["d4"]),
        n("Div", ["d4", "speed"], ["dsp"]),
        n("Add", ["dsp", "half"], ["dh"]),
        n("Floor", ["dh"], ["dr"]),
        n("Max", ["dr", "one_f"], ["dm"]),
        n("Squeeze", ["dm", "ax2"], ["d2"]),  # [1, T]
        n("Squeeze", ["d2", "ax0"], ["df"]),  # [T]
        n("Cast", ["df"], ["duration"], to=TensorProto.INT64),
        n("ReduceSum", ["duration"], ["frames"], keepdims=0),
        n("Mul", ["frames", "hop"], ["total"]),
        n("Range", ["zero_i", "total", "one_i"], ["ti"]),
        n("Cast", ["ti"], ["t"], to=TensorProto.FLOAT),
        n("ReduceMean", ["h"], ["hm"], keepdims=0),
        n("Sigmoid", ["hm"], ["hs"]),
        n("Mul", ["hs", "f1"], ["hf"]),
        n("Add", ["hf", "f0"], ["freq"]),
        n("Mul", ["t", "freq"], ["phase"]),
        n("Sin", ["phase"], ["sine"]),
        n("Mul", ["sine", "amp"], [out_audio]),
    ]
    outputs = [helper.make_tensor_value_info(out_audio, TensorProto.FLOAT, ["samples"])]
    if timed:
        outputs.append(helper.make_tensor_value_info("duration", TensorProto.INT64, ["tokens"]))
    graph = helper.make_graph(
        nodes, "kokoro_tiny",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, [1, "tokens"]),
         helper.make_tensor_value_info("style", TensorProto.FLOAT, [1, 256]),
         helper.make_tensor_value_info("speed", TensorProto.FLOAT, [1])],
        outputs, inits)
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def kokoro_dir(root: Path, *, timed: bool = True, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    kokoro_graph(root / "kokoro-v1.0.onnx", timed=timed, seed=seed)
    rng = np.random.default_rng(seed + 1)
    np.savez(root / "voices-v1.0.bin", **{v: rng.normal(0, 1, (510, 1, 256)).astype(np.float32) for v in VOICES})
    # np.savez appends .npz; kokoro-onnx's file is an npz named .bin
    (root / "voices-v1.0.bin.npz").rename(root / "voices-v1.0.bin")
    return root


# -- Parakeet ----------------------------------------------------------------------------------------
PARAKEET_TOKENS = ["<unk>", "▁the", "▁a", "s", "▁cat", "▁dog", "ing", "ed", "▁is", "▁on", "▁mat", "▁b", "t", "e",
                   "▁", "o", "n", "▁hello", "▁world", "'", "▁it", "r", "▁sat", "y", "▁and", "l", "▁to", "d", "a",
                   "▁in", "<blk>"]


def _encoder(path: Path, feats: int, dim: int, rng: np.random.Generator, ctc_vocab: int | None = None) -> None:
    n = helper.make_node
    inits = [_init("Wc", rng.normal(0, 0.3, (dim, feats, 8)).astype(np.float32)),
             _init("bc", rng.normal(0, 0.1, (dim,)).astype(np.float32)),
             _const("one", 1, np.int64), _const("eight", 8, np.int64)]
    nodes = [n("Conv", ["audio_signal", "Wc", "bc"], ["c"], strides=[8], kernel_shape=[8], pads=[0, 7]),
             n("Tanh", ["c"], ["enc"]),
             n("Sub", ["length", "one"], ["l1"]), n("Div", ["l1", "eight"], ["l2"]),
             n("Add", ["l2", "one"], ["encoded_lengths"])]
    outs = [helper.make_tensor_value_info("encoded_lengths", TensorProto.INT64, ["batch"])]
    if ctc_vocab is None:
        nodes.append(n("Identity", ["enc"], ["outputs"]))
        outs.insert(0, helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", dim, "frames"]))
        name = "encoder"
    else:
        inits.append(_init("Wo", rng.normal(0, 2.0, (dim, ctc_vocab)).astype(np.float32)))
        inits.append(_init("perm_b", np.zeros(ctc_vocab, np.float32)))
        nodes += [n("Transpose", ["enc"], ["encT"], perm=[0, 2, 1]), n("MatMul", ["encT", "Wo"], ["lg"]),
                  n("LogSoftmax", ["lg"], ["logprobs"], axis=-1)]
        outs = [helper.make_tensor_value_info("logprobs", TensorProto.FLOAT, ["batch", "frames", ctc_vocab])]
        name = "ctc"
    graph = helper.make_graph(nodes, name, [
        helper.make_tensor_value_info("audio_signal", TensorProto.FLOAT, ["batch", feats, "time"]),
        helper.make_tensor_value_info("length", TensorProto.INT64, ["batch"])], outs, inits)
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _decoder_joint(path: Path, dim: int, vocab: int, rng: np.random.Generator, hidden: int = 8, joint: int = 16,
                   durations: int = 5, blank_bias: float = 0.0) -> None:
    n = helper.make_node
    bo = rng.normal(0, 0.5, (vocab + durations,)).astype(np.float32)
    bo[vocab - 1] += blank_bias
    inits = [_init("E", rng.normal(0, 1, (vocab, hidden)).astype(np.float32)),
             _init("Ws", rng.normal(0, 0.5, (hidden, hidden)).astype(np.float32)),
             _init("We", rng.normal(0, 1, (dim, joint)).astype(np.float32)),
             _init("Wp", rng.normal(0, 1, (hidden, joint)).astype(np.float32)),
             _init("Wo", rng.normal(0, 1.5, (joint, vocab + durations)).astype(np.float32)),
             _init("bo", bo), _const("ax0", [0], np.int64), _const("ax1", [1], np.int64), _const("ax2", [2], np.int64),
             _const("shape", [0, 1, 1, vocab + durations], np.int64), _const("half", 0.5), _const("p9", 0.9),
             _const("p1", 0.1)]
    nodes = [n("Gather", ["E", "targets"], ["emb3"], axis=0), n("Squeeze", ["emb3", "ax1"], ["emb"]),
             n("ReduceSum", ["input_states_1", "ax0"], ["s1"], keepdims=0), n("MatMul", ["s1", "Ws"], ["s1w"]),
             n("Add", ["emb", "s1w"], ["gp"]), n("Tanh", ["gp"], ["g"]),
             n("Unsqueeze", ["g", "ax0"], ["g0"]), n("Mul", ["g0", "half"], ["gh"]),
             n("Concat", ["g0", "gh"], ["output_states_1"], axis=0),
             n("Mul", ["input_states_2", "p9"], ["s2a"]), n("Mul", ["g0", "p1"], ["s2b"]),
             n("Add", ["s2a", "s2b"], ["output_states_2"]),
             n("Squeeze", ["encoder_outputs", "ax2"], ["enc"]), n("MatMul", ["enc", "We"], ["je"]),
             n("MatMul", ["g", "Wp"], ["jp"]), n("Add", ["je", "jp"], ["jsum"]), n("Tanh", ["jsum"], ["j"]),
             n("MatMul", ["j", "Wo"], ["lo"]), n("Add", ["lo", "bo"], ["lb"]),
             n("Reshape", ["lb", "shape"], ["outputs"]), n("Identity", ["target_length"], ["prednet_lengths"])]
    graph = helper.make_graph(nodes, "decoder_joint", [
        helper.make_tensor_value_info("encoder_outputs", TensorProto.FLOAT, ["batch", dim, 1]),
        helper.make_tensor_value_info("targets", TensorProto.INT32, ["batch", 1]),
        helper.make_tensor_value_info("target_length", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("input_states_1", TensorProto.FLOAT, [2, "batch", hidden]),
        helper.make_tensor_value_info("input_states_2", TensorProto.FLOAT, [2, "batch", hidden])], [
        helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 1, 1, vocab + durations]),
        helper.make_tensor_value_info("prednet_lengths", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("output_states_1", TensorProto.FLOAT, [2, "batch", hidden]),
        helper.make_tensor_value_info("output_states_2", TensorProto.FLOAT, [2, "batch", hidden])], inits)
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def parakeet_dir(root: Path, *, kind: str = "tdt", seed: int = 0, feats: int = 128, dim: int = 16,
                 blank_bias: float = 0.0) -> Path:
    """A NeMo FastConformer model directory as onnx-asr reads it (``kind``: tdt, rnnt or ctc)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = len(PARAKEET_TOKENS)
    (root / "vocab.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(PARAKEET_TOKENS)), encoding="utf-8")
    cfg = {"model_type": f"nemo-conformer-{kind}", "features_size": feats, "subsampling_factor": 8}
    if kind != "ctc":
        cfg["max_tokens_per_step"] = 10
    (root / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    if kind == "ctc":
        _encoder(root / "model.onnx", feats, dim, rng, ctc_vocab=vocab)
    else:
        _encoder(root / "encoder-model.onnx", feats, dim, rng)
        _decoder_joint(root / "decoder_joint-model.onnx", dim, vocab, rng, durations=5 if kind == "tdt" else 0,
                       blank_bias=blank_bias)
    return root


def kokoro_torch_dir(root: Path, *, seed: int = 0) -> Path:
    """hexgrad/Kokoro-82M's PyTorch layout with random weights: config.json (a small PL-BERT; the
    decoder's widths are fixed by upstream's code), kokoro-v1_0.pth (one state dict per submodule,
    as upstream saves it) and voices/*.pt."""
    import torch

    from voxbox.engines.tts.kokoro._backends import upstream_kmodel

    root.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((Path(__file__).parents[2] / "src/voxbox/engines/tts/kokoro/vocab_v1.json").read_text("utf-8"))
    config = {
        "istftnet": {"upsample_kernel_sizes": [20, 12], "upsample_rates": [10, 6], "gen_istft_hop_size": 5,
                     "gen_istft_n_fft": 20, "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
                     "resblock_kernel_sizes": [3, 7, 11], "upsample_initial_channel": 512},
        "dim_in": 64, "dropout": 0.2, "hidden_dim": 512, "max_conv_dim": 512, "max_dur": 50, "multispeaker": True,
        "n_layer": 1, "n_mels": 80, "n_token": 178, "style_dim": 128, "text_encoder_kernel_size": 5,
        "plbert": {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                   "max_position_embeddings": 512, "num_hidden_layers": 1, "dropout": 0.1},
        "vocab": cfg["vocab"],
    }
    (root / "config.json").write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    torch.manual_seed(seed)
    kmodel = upstream_kmodel()
    # build once with an empty checkpoint, then save its random weights the way upstream ships them
    empty = root / "_empty.pth"
    torch.save({}, empty)
    model = kmodel(repo_id="hexgrad/Kokoro-82M", config=str(root / "config.json"), model=str(empty))
    empty.unlink()
    with torch.no_grad():  # about 3 frames (75 ms) per phoneme, like speech, instead of random lengths
        lin = model.predictor.duration_proj.linear_layer
        lin.weight.mul_(0.01)
        lin.bias.fill_(-2.75)
    torch.save({k: getattr(model, k).state_dict() for k in ("bert", "bert_encoder", "predictor", "text_encoder",
                                                           "decoder")}, root / "kokoro-v1_0.pth")
    (root / "voices").mkdir(exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    for v in VOICES[:2]:
        torch.save(torch.randn(510, 1, 256, generator=gen) * 0.5, root / "voices" / f"{v}.pt")
    return root
