"""Random-weight models with the real shapes, in the upstream ONNX layouts, for speed benchmarks.

Timing does not depend on weight values when the work per step is fixed, so these graphs measure
what the real ones would (DESIGN.md, "Engines"). Nothing is downloaded.

* :func:`make_kokoro`: Kokoro-82M's upstream ``KModel`` (the ``kokoro`` package's model classes,
  real ``config.json`` shapes: PL-BERT 12 x 768, 512-wide predictor/text encoder, iSTFTNet
  decoder) with random weights, exported like kokoro-onnx's export (``input_ids``, ``style``,
  ``speed`` -> ``waveform``, ``duration``), plus a ``voices-v1.0.bin`` npz of random voices. The
  duration head is biased to about 3.2 frames (80 ms) per phoneme, the real model's pace, so the
  audio per phoneme (and the decoder's work) is realistic.
* :func:`make_parakeet`: a FastConformer-TDT with Parakeet-TDT-0.6B-v2's shapes (dw-striding 8x
  subsampling with 256 channels, 24 conformer layers of d_model 1024, 8 heads with relative
  positions, FF 4096, depthwise conv kernel 9; LSTM prediction net 2 x 640; joint 640 -> 1025
  tokens + 5 durations), written in plain torch here (NeMo is not installable offline), exported
  as onnx-asr reads it: ``encoder-model.onnx`` (+ external data), ``decoder_joint-model.onnx``,
  ``vocab.txt``, ``config.json``. The joint's blank and duration biases make the walk emit about
  one token per 4 frames and skip 1-4 frames, like speech.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["make_kokoro", "make_parakeet"]


# -- Kokoro -------------------------------------------------------------------------------------------
def make_kokoro(root: Path, voices: int = 4, seed: int = 0) -> Path:
    import importlib.resources

    from voxbox.engines.tts.kokoro._backends import upstream_kmodel

    root.mkdir(parents=True, exist_ok=True)
    if (root / "kokoro-v1.0.onnx").is_file() and (root / "voices-v1.0.bin").is_file():
        return root
    config = json.loads(importlib.resources.files("kokoro_onnx").joinpath("config.json").read_text("utf-8"))
    cfg_path = root / "_config.json"
    cfg_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    torch.manual_seed(seed)
    empty = root / "_empty.pth"
    torch.save({}, empty)
    kmodel_cls = upstream_kmodel()
    model = kmodel_cls(
        repo_id="hexgrad/Kokoro-82M", config=str(cfg_path), model=str(empty), disable_complex=True
    ).eval()
    empty.unlink()
    cfg_path.unlink()
    with torch.no_grad():  # ~3.2 frames per phoneme: sigmoid(b) * max_dur = 3.2
        lin = model.predictor.duration_proj.linear_layer
        lin.weight.mul_(0.01)
        lin.bias.fill_(math.log(3.2 / (config["max_dur"] - 3.2)))

    class ForOnnx(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, style: torch.Tensor, speed: torch.Tensor):
            return self.m.forward_with_tokens(input_ids, style, speed)

    ids = torch.randint(1, 170, (1, 64))
    ids[0, 0] = ids[0, -1] = 0
    style = torch.randn(1, 256)
    torch.onnx.export(
        ForOnnx(model),
        (ids, style, torch.ones(1)),
        str(root / "kokoro-v1.0.onnx"),
        dynamo=False,
        input_names=["input_ids", "style", "speed"],
        output_names=["waveform", "duration"],
        dynamic_axes={"input_ids": {1: "tokens"}, "waveform": {0: "samples"}, "duration": {0: "tokens"}},
        opset_version=20,
    )
    rng = np.random.default_rng(seed)
    names = ["af_heart", "af_bella", "af_sky", "am_adam", "bf_emma", "bm_george"][:voices]
    with open(root / "voices-v1.0.bin", "wb") as fh:
        np.savez(fh, **{n: (rng.normal(0, 0.3, (510, 1, 256))).astype(np.float32) for n in names})
    return root


# -- Parakeet (FastConformer-TDT, Parakeet-TDT-0.6B-v2 shapes) ----------------------------------------
D_MODEL, N_LAYERS, N_HEADS, FF, KERNEL, SUB_CH, FEATS = 1024, 24, 8, 4096, 9, 256, 128
PRED, JOINT, VOCAB, DURATIONS = 640, 640, 1024, (0, 1, 2, 3, 4)


class Subsampling(nn.Module):
    """NeMo ``dw_striding``: conv 3x3/2, then two (depthwise 3x3/2 + pointwise) blocks, ReLU, linear."""

    def __init__(self) -> None:
        super().__init__()
        c = SUB_CH
        self.conv = nn.Sequential(
            nn.Conv2d(1, c, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1, groups=c),
            nn.Conv2d(c, c, 1),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, 2, 1, groups=c),
            nn.Conv2d(c, c, 1),
            nn.ReLU(),
        )
        self.out = nn.Linear(c * (FEATS // 8), D_MODEL)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.transpose(1, 2).unsqueeze(1))  # [B, C, T/8, F/8]
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))
        for _ in range(3):
            lengths = torch.div(lengths + 2 - 3, 2, rounding_mode="floor") + 1
        return x, lengths


class RelPosAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.h, self.dk = N_HEADS, D_MODEL // N_HEADS
        self.linear_q, self.linear_k, self.linear_v, self.linear_out = (nn.Linear(D_MODEL, D_MODEL) for _ in range(4))
        self.linear_pos = nn.Linear(D_MODEL, D_MODEL, bias=False)
        self.pos_bias_u = nn.Parameter(torch.randn(self.h, self.dk) * 0.02)
        self.pos_bias_v = nn.Parameter(torch.randn(self.h, self.dk) * 0.02)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.dk)
        k = self.linear_k(x).view(b, t, self.h, self.dk).transpose(1, 2)
        v = self.linear_v(x).view(b, t, self.h, self.dk).transpose(1, 2)
        p = self.linear_pos(pos).view(1, -1, self.h, self.dk).transpose(1, 2)  # [1, H, 2T-1, dk]
        ac = torch.matmul((q + self.pos_bias_u).transpose(1, 2), k.transpose(-2, -1))
        bd = torch.matmul((q + self.pos_bias_v).transpose(1, 2), p.transpose(-2, -1))  # [B, H, T, 2T-1]
        bd = self._rel_shift(bd)[..., :t]
        scores = (ac + bd) / math.sqrt(self.dk)
        scores = scores.masked_fill(~mask[:, None, None, :], -10000.0)
        out = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b, t, D_MODEL)
        return self.linear_out(out)

    @staticmethod
    def _rel_shift(x: torch.Tensor) -> torch.Tensor:
        b, h, t, n = x.shape
        x = torch.nn.functional.pad(x, (1, 0)).view(b, h, n + 1, t)
        return x[:, :, 1:].view(b, h, t, n)


class ConvModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(D_MODEL, 2 * D_MODEL, 1)
        self.depthwise_conv = nn.Conv1d(D_MODEL, D_MODEL, KERNEL, padding=KERNEL // 2, groups=D_MODEL)
        self.batch_norm = nn.BatchNorm1d(D_MODEL)
        self.pointwise_conv2 = nn.Conv1d(D_MODEL, D_MODEL, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = nn.functional.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)
        x = x.masked_fill(~mask[:, None, :], 0.0)
        x = nn.functional.silu(self.batch_norm(self.depthwise_conv(x)))
        return self.pointwise_conv2(x).transpose(1, 2)


def _ff() -> nn.Sequential:
    return nn.Sequential(nn.Linear(D_MODEL, FF), nn.SiLU(), nn.Linear(FF, D_MODEL))


class ConformerLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm_feed_forward1, self.feed_forward1 = nn.LayerNorm(D_MODEL), _ff()
        self.norm_self_att, self.self_attn = nn.LayerNorm(D_MODEL), RelPosAttention()
        self.norm_conv, self.conv = nn.LayerNorm(D_MODEL), ConvModule()
        self.norm_feed_forward2, self.feed_forward2 = nn.LayerNorm(D_MODEL), _ff()
        self.norm_out = nn.LayerNorm(D_MODEL)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), pos, mask)
        x = x + self.conv(self.norm_conv(x), mask)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)


class FastConformerEncoder(nn.Module):
    def __init__(self, layers: int = N_LAYERS) -> None:
        super().__init__()
        self.pre_encode = Subsampling()
        self.layers = nn.ModuleList(ConformerLayer() for _ in range(layers))

    @staticmethod
    def _pos(t: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(t - 1, -t, -1, device=device, dtype=torch.float32)[:, None]
        div = torch.exp(
            torch.arange(0, D_MODEL, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / D_MODEL)
        )
        pe = torch.zeros(positions.shape[0], D_MODEL, device=device)
        pe[:, 0::2] = torch.sin(positions * div)
        pe[:, 1::2] = torch.cos(positions * div)
        return pe

    def forward(self, audio_signal: torch.Tensor, length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lengths = self.pre_encode(audio_signal, length)
        t = x.shape[1]
        mask = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        pos = self._pos(t, x.device)
        for layer in self.layers:
            x = layer(x, pos, mask)
        return x.transpose(1, 2), lengths


class DecoderJoint(nn.Module):
    """NeMo ``RNNTDecoderJoint`` export: prediction net one step + joint on one encoder frame."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB + 1, PRED)
        self.lstm = nn.LSTM(PRED, PRED, num_layers=2)
        self.enc = nn.Linear(D_MODEL, JOINT)
        self.pred = nn.Linear(PRED, JOINT)
        self.out = nn.Linear(JOINT, VOCAB + 1 + len(DURATIONS))

    def forward(self, encoder_outputs, targets, target_length, input_states_1, input_states_2):
        g, (h, c) = self.lstm(self.embed(targets.long()).transpose(0, 1), (input_states_1, input_states_2))
        j = torch.relu(self.enc(encoder_outputs.transpose(1, 2)) + self.pred(g.transpose(0, 1)))
        return self.out(j).unsqueeze(2), target_length, h, c


def make_parakeet(root: Path, layers: int = N_LAYERS, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if not (root / "encoder-model.onnx").is_file():
        _export_encoder(root, layers)
    if not (root / "decoder_joint-model.onnx").is_file():
        _export_decoder_joint(root, _sample_frames(root))
    pieces = ["<unk>"] + [
        ("\u2581" if i % 3 == 0 else "") + "".join(chr(97 + (i * 7 + k) % 26) for k in range(1 + i % 4))
        for i in range(1, VOCAB)
    ]
    (root / "vocab.txt").write_text("".join(f"{p} {i}\n" for i, p in enumerate(pieces + ["<blk>"])), encoding="utf-8")
    (root / "config.json").write_text(
        json.dumps(
            {
                "model_type": "nemo-conformer-tdt",
                "features_size": FEATS,
                "subsampling_factor": 8,
                "max_tokens_per_step": 10,
            }
        ),
        encoding="utf-8",
    )
    return root


def _export_encoder(root: Path, layers: int) -> None:
    enc = FastConformerEncoder(layers).eval()
    with torch.no_grad():
        # Random deep stacks collapse every frame to the same vector; small residual branches keep the
        # output following the input, so the decoder's walk varies over time as on speech.
        for layer in enc.layers:
            for m in (
                layer.feed_forward1[2],
                layer.feed_forward2[2],
                layer.self_attn.linear_out,
                layer.conv.pointwise_conv2,
            ):
                m.weight.mul_(0.05)
    feats = torch.randn(2, FEATS, 800)
    lens = torch.tensor([800, 600])
    tmp = root / "_export"
    tmp.mkdir(exist_ok=True)
    torch.onnx.export(
        enc,
        (feats, lens),
        str(tmp / "encoder-model.onnx"),
        dynamo=False,
        input_names=["audio_signal", "length"],
        output_names=["outputs", "encoded_lengths"],
        dynamic_axes={
            "audio_signal": {0: "batch", 2: "time"},
            "length": {0: "batch"},
            "outputs": {0: "batch", 2: "frames"},
            "encoded_lengths": {0: "batch"},
        },
        opset_version=17,
        external_data=True,
    )
    # one weights file beside the graph, as the published Parakeet ONNX exports ship it
    import onnx

    model = onnx.load(str(tmp / "encoder-model.onnx"))
    onnx.save_model(
        model,
        str(root / "encoder-model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="encoder-model.onnx.data",
    )
    del model
    shutil.rmtree(tmp)


def _sample_frames(root: Path, seconds: float = 20.0) -> torch.Tensor:
    """Encoder frames [n, D, 1] of a synthetic voiced signal through the exported encoder."""
    import onnxruntime as ort

    from voxbox.engines.asr.parakeet.features import log_mel

    t = np.arange(int(seconds * 16000)) / 16000
    wave = (
        0.1 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * (150 + 50 * np.sin(t)) * t)
        + np.random.default_rng(0).normal(0, 0.02, t.size)
    ).astype(np.float32)
    feats, lens = log_mel(wave[None], np.array([wave.size]), FEATS)
    sess = ort.InferenceSession(str(root / "encoder-model.onnx"), providers=["CPUExecutionProvider"])
    out, _ = sess.run(None, {"audio_signal": feats, "length": lens})
    return torch.from_numpy(out[0].T.copy())[:, :, None]


def _blank_rate(dj: DecoderJoint, frames: torch.Tensor) -> tuple[float, float]:
    """(share of frames where blank wins from the start state, mean duration) on real encoder frames."""
    n = frames.shape[0]
    with torch.no_grad():
        tgt = torch.full((n, 1), VOCAB, dtype=torch.int32)
        st = torch.zeros(2, n, PRED)
        out = dj(frames, tgt, torch.ones(n, dtype=torch.int32), st, st)[0].reshape(n, -1)
    blank = (out[:, : VOCAB + 1].argmax(1) == VOCAB).float().mean().item()
    dur = torch.tensor(DURATIONS, dtype=torch.float32)[out[:, VOCAB + 1 :].argmax(1)].mean().item()
    return blank, dur


def _export_decoder_joint(root: Path, frames: torch.Tensor) -> None:
    dj = DecoderJoint().eval()
    with torch.no_grad():  # blank wins ~3 of 4 steps (about one token per 4 frames), durations mostly 1-4
        dj.out.weight.mul_(4.0)
        dj.out.bias.zero_()
        dj.out.bias[VOCAB + 1] = -3.0  # duration 0 rarely
        lo, hi = -20.0, 20.0
        for _ in range(20):
            dj.out.bias[VOCAB] = (lo + hi) / 2
            lo, hi = ((lo + hi) / 2, hi) if _blank_rate(dj, frames)[0] < 0.75 else (lo, (lo + hi) / 2)
    b = 2
    args = (
        torch.randn(b, D_MODEL, 1),
        torch.zeros(b, 1, dtype=torch.int32),
        torch.ones(b, dtype=torch.int32),
        torch.zeros(2, b, PRED),
        torch.zeros(2, b, PRED),
    )
    torch.onnx.export(
        dj,
        args,
        str(root / "decoder_joint-model.onnx"),
        dynamo=False,
        input_names=["encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2"],
        output_names=["outputs", "prednet_lengths", "output_states_1", "output_states_2"],
        dynamic_axes={
            "encoder_outputs": {0: "batch"},
            "targets": {0: "batch"},
            "target_length": {0: "batch"},
            "input_states_1": {1: "batch"},
            "input_states_2": {1: "batch"},
            "outputs": {0: "batch"},
            "prednet_lengths": {0: "batch"},
            "output_states_1": {1: "batch"},
            "output_states_2": {1: "batch"},
        },
        opset_version=17,
    )
