"""The Parakeet engine: NeMo FastConformer TDT/RNN-T/CTC exported to ONNX, on ONNX Runtime.

Model directory (onnx-asr's layout)::

    config.json                 # {"model_type": "nemo-conformer-tdt", "features_size": 128,
                                #  "subsampling_factor": 8, "max_tokens_per_step": 10}
    vocab.txt                   # "<piece> <id>" per line, <blk> last
    encoder-model.onnx          # audio_signal [B, F, T], length [B] -> outputs [B, D, T/8], encoded_lengths
    decoder_joint-model.onnx    # encoder_outputs [B, D, 1], targets [B, 1], target_length [B],
                                #   input_states_1/2 [L, B, H] -> outputs [B, 1, 1, V(+durations)], ...
    model.onnx                  # CTC instead of the two above: -> logprobs [B, T/8, V]

(``*.int8.onnx`` quantised variants are picked with ``quantization="int8"``; external-data
``.onnx.data`` files sit beside their graph.)

Long audio is cut into equal windows (at most ``chunk_length`` seconds, default 60, reading
``chunk_overlap`` more on each side; a word belongs to the window whose core holds its start); the
windows go through the encoder and the batched greedy decoder ``batch_size`` at a time.
The fronts (CLI, server, batch) run Silero VAD first by default (``voxbox.runtime.vad``), so the
engine sees speech only; cuts inside it are still even, with overlap (placing them in the pauses
VAD found is left to do).

Stages: ``resample``, ``features`` (log-mel: numpy on the CPU, torch on a GPU when torch sees it),
``encode``, ``decode``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.engines.base import cancellable, validate_asr_call
from voxbox.engines.spec import build_options
from voxbox.errors import (
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
    ModelNotFoundError,
)
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
    Word,
)

from . import ParakeetOptions
from .decoding import Hypothesis, Vocab, ctc_greedy, transducer_greedy, words_of
from .features import HOP, log_mel, log_mel_torch

__all__ = ["ParakeetEngine", "find_files", "windows"]

SAMPLE_RATE = 16000
INSTALL_HINT = "pip install 'voxbox[onnx]'"
DEFAULT_CHUNK_S = 60.0  # full attention over 60 s costs a few % over the feed-forward work
SENTENCE_END = (".", "?", "!", "。", "？", "！")


def find_files(root: Path, quantization: str | None = None) -> dict[str, Path]:
    """The graph files, vocab and config of the model at ``root``; a clear error for what is missing."""
    if not root.is_dir():
        raise ModelNotFoundError(f"parakeet model directory {str(root)!r} not found (onnx-asr layout: config.json, "
                                 "vocab.txt, encoder-model.onnx, decoder_joint-model.onnx)", param="model")
    suffix = f".{quantization}" if quantization else ""
    out: dict[str, Path] = {}
    for key, name in (("vocab", "vocab.txt"), ("config", "config.json")):
        if (root / name).is_file():
            out[key] = root / name
    if "vocab" not in out:
        raise ModelNotFoundError(f"{root} is not a parakeet model: vocab.txt is missing", param="model")
    enc, dec, ctc = (root / f"encoder-model{suffix}.onnx", root / f"decoder_joint-model{suffix}.onnx",
                     root / f"model{suffix}.onnx")
    if enc.is_file() or dec.is_file():
        for p in (enc, dec):
            if not p.is_file():
                raise ModelNotFoundError(f"{root} is not a complete parakeet model: {p.name} is missing", param="model")
        out.update(encoder=enc, decoder_joint=dec)
    elif ctc.is_file():
        out["ctc"] = ctc
    else:
        raise ModelNotFoundError(f"{root} has no parakeet graphs: expected encoder-model{suffix}.onnx and "
                                 f"decoder_joint-model{suffix}.onnx (TDT/RNN-T) or model{suffix}.onnx (CTC)",
                                 param="model")
    return out


def windows(n_samples: int, chunk: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """(read start, read end, keep start, keep end) sample ranges covering ``n_samples``.

    Audio up to ``chunk`` samples is one window. Longer audio is cut into the fewest windows of
    *equal* kept length not above ``chunk`` (so a batch of windows carries almost no padding), each
    reading ``overlap`` more on either side for context.
    Not yet done: placing the cuts in the pauses VAD found (then the overlap can go and words are
    never split)."""
    if n_samples <= chunk:
        return [(0, n_samples, 0, n_samples)]
    n = -(-n_samples // chunk)
    bounds = [round(i * n_samples / n) for i in range(n + 1)]
    return [(max(0, a - overlap), min(n_samples, b + overlap), a, b) for a, b in pairwise(bounds)]


class ParakeetEngine:
    def __init__(self, root: Path, *, device: str = "auto", threads: int = 0, quantization: str | None = None) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineUnavailableError(f"parakeet needs onnxruntime ({exc})", install_hint=INSTALL_HINT) from exc
        from voxbox.engines.asr.onnx_whisper import PROVIDERS, pick_providers

        self.root = root
        files = find_files(root, quantization)
        try:
            self.cfg: dict[str, Any] = (
                json.loads(files["config"].read_text(encoding="utf-8")) if "config" in files else {}
            )
            self.vocab = Vocab.from_file(files["vocab"].read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not read the parakeet config/vocab in {root}: {exc}") from exc
        self.kind = "ctc" if "ctc" in files else ("tdt" if "tdt" in str(self.cfg.get("model_type", "tdt")) else "rnnt")
        self.n_mels = int(self.cfg.get("features_size", 80))
        self.subsampling = int(self.cfg.get("subsampling_factor", 8))
        self.max_symbols = int(self.cfg.get("max_tokens_per_step", 10))
        self.frame_s = HOP / SAMPLE_RATE * self.subsampling
        kind, index, providers = pick_providers(device)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            if self.kind == "ctc":
                self.encoder = ort.InferenceSession(str(files["ctc"]), so, providers=providers)
                self.decoder = None
            else:
                self.encoder = ort.InferenceSession(str(files["encoder"]), so, providers=providers)
                self.decoder = ort.InferenceSession(str(files["decoder_joint"]), so, providers=providers)
        except Exception as exc:
            msg = " ".join(str(exc).split())[:300]
            if kind != "cpu":
                raise DeviceError(f"parakeet could not start on {PROVIDERS[kind]}: {msg}") from exc
            raise ModelLoadError(f"could not load the parakeet graphs in {root}: {msg}") from exc
        used = self.encoder.get_providers()[0]
        if used != PROVIDERS[kind]:
            raise DeviceError(f"onnxruntime fell back to {used} although {PROVIDERS[kind]} was requested")
        self._setup_decoder()
        self.device = kind if kind == "cpu" else f"{kind}:{index}"
        self._torch_device = _torch_gpu(index) if kind != "cpu" else None
        self._lock = threading.Lock()
        size = sum(p.stat().st_size for k, p in files.items() if k in ("encoder", "decoder_joint", "ctc"))
        self.params = size // 4
        self.info = EngineInfo(
            name="parakeet", task="asr", model=str(root), device=self.device, dtype=quantization or "float32",
            sample_rate=SAMPLE_RATE, languages=tuple(self.cfg.get("languages", ("en",))),
            supports_word_timestamps=True, max_concurrency=1,
            extra={"execution_provider": used, "head": self.kind, "model_type": self.cfg.get("model_type"),
                   "features": self.n_mels, "vocab_size": self.vocab.size, "threads": threads},
        )

    def _setup_decoder(self) -> None:
        if self.decoder is None:
            self.durations: list[int] | None = None
            return
        ins = {i.name: i for i in self.decoder.get_inputs()}
        need = ("encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2")
        missing = [n for n in need if n not in ins]
        if missing:
            raise ModelLoadError(f"decoder_joint graph lacks input(s) {', '.join(missing)}")
        types = {"tensor(int32)": np.int32, "tensor(int64)": np.int64}
        self._target_dtype = types.get(ins["targets"].type, np.int32)
        self._length_dtype = types.get(ins["target_length"].type, np.int32)
        s1, s2 = ins["input_states_1"].shape, ins["input_states_2"].shape
        self._state_shapes = ((int(s1[0]), int(s1[2])), (int(s2[0]), int(s2[2])))
        out_dim = self.decoder.get_outputs()[0].shape[-1]
        n_dur = (int(out_dim) - self.vocab.size) if isinstance(out_dim, int) else 0
        if self.kind == "tdt":
            self.durations = list(self.cfg.get("durations", range(max(n_dur, 0)))) or [0, 1, 2, 3, 4]
        else:
            self.durations = None

    # -- graphs -------------------------------------------------------------------------------------
    def encode(self, feats: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Features -> (encoder frames [B, T', D] or CTC log-probs [B, T', V], lengths)."""
        if self.kind == "ctc":
            (logprobs,) = self.encoder.run(["logprobs"], {"audio_signal": feats, "length": lens})
            return logprobs, (lens - 1) // self.subsampling + 1
        out, out_lens = self.encoder.run(["outputs", "encoded_lengths"], {"audio_signal": feats, "length": lens})
        return np.ascontiguousarray(out.transpose(0, 2, 1)), out_lens.astype(np.int64)

    def _step(
        self, frames: np.ndarray, prev: np.ndarray, state: tuple[np.ndarray, np.ndarray]
    ) -> tuple[np.ndarray, Any]:
        assert self.decoder is not None
        b = frames.shape[0]
        out, _, s1, s2 = self.decoder.run(None, {
            "encoder_outputs": np.ascontiguousarray(frames[:, :, None], dtype=np.float32),
            "targets": prev.astype(self._target_dtype)[:, None],
            "target_length": np.ones(b, dtype=self._length_dtype),
            "input_states_1": state[0], "input_states_2": state[1]})
        return out.reshape(b, -1), (s1, s2)

    def decode(self, enc: np.ndarray, lens: np.ndarray, cancel: CancelToken | None = None) -> list[Hypothesis]:
        if self.kind == "ctc":
            return ctc_greedy(enc, lens, self.vocab.blank)
        (l1, h1), (l2, h2) = self._state_shapes

        def init(b: int) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((l1, b, h1), np.float32), np.zeros((l2, b, h2), np.float32)

        def take(state: tuple[np.ndarray, np.ndarray], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.ascontiguousarray(state[0][:, idx]), np.ascontiguousarray(state[1][:, idx])

        def put(state: tuple[np.ndarray, np.ndarray], idx: np.ndarray, new: tuple[np.ndarray, np.ndarray]) -> None:
            state[0][:, idx] = new[0]
            state[1][:, idx] = new[1]

        return transducer_greedy(self._step, enc, lens, blank=self.vocab.blank, vocab_size=self.vocab.size,
                                 durations=self.durations, max_symbols=self.max_symbols, init_state=init, take=take,
                                 put=put, cancel=cancel)

    def recognize(self, waves: list[np.ndarray], timings: StageTimings | None = None,
                  cancel: CancelToken | None = None) -> list[Hypothesis]:
        """16 kHz waveforms (one batch) -> one hypothesis each."""
        timings = timings or StageTimings()
        lens = np.array([len(w) for w in waves], dtype=np.int64)
        batch = np.zeros((len(waves), int(lens.max())), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        with timings.measure("features"):
            if self._torch_device is not None:  # numpy features would cap a GPU's batch throughput
                import torch

                tf, tl = log_mel_torch(torch.from_numpy(batch).to(self._torch_device),
                                       torch.from_numpy(lens).to(self._torch_device), self.n_mels)
                feats, flens = tf.cpu().numpy(), tl.cpu().numpy()
            else:
                feats, flens = log_mel(batch, lens, self.n_mels)
        with self._lock:
            with timings.measure("encode"):
                enc, elens = self.encode(feats, flens)
            with timings.measure("decode"):
                return self.decode(enc, elens, cancel)

    # -- the ASR contract ---------------------------------------------------------------------------
    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        validate_asr_call(audio, task, multilingual=False, model=self.info.model)
        opts = build_options(ParakeetOptions, options, **kwargs)
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        chunk = int((opts.chunk_length or DEFAULT_CHUNK_S) * SAMPLE_RATE)
        overlap = int((opts.chunk_overlap if opts.chunk_overlap is not None else 2.0) * SAMPLE_RATE)
        batch = opts.batch_size or (4 if self.device == "cpu" else 32)
        lang = language or (self.info.languages[0] if len(self.info.languages) == 1 else None)
        info = TranscriptionInfo(
            language=lang, language_probability=1.0 if lang else None, duration=len(samples) / SAMPLE_RATE,
            task="transcribe", timings=timings,
            options={"model": self.info.model, "head": self.kind, "chunk_length": chunk / SAMPLE_RATE,
                     "chunk_overlap": overlap / SAMPLE_RATE, "batch_size": batch, "device": self.device,
                     "execution_provider": self.info.extra["execution_provider"],
                     "prompt_ignored": bool(prompt)},
        )
        segs = self._segments(samples, windows(len(samples), chunk, overlap), batch, word_timestamps, timings, cancel)
        return cancellable(segs, cancel), info

    def _segments(self, samples: np.ndarray, wins: list[tuple[int, int, int, int]], batch: int, keep_words: bool,
                  timings: StageTimings, cancel: CancelToken | None) -> Iterator[Segment]:
        index = 0
        for b0 in range(0, len(wins), batch):
            group = wins[b0:b0 + batch]
            hyps = self.recognize([samples[r0:r1] for r0, r1, _, _ in group], timings, cancel)
            for (r0, _, k0, k1), hyp in zip(group, hyps, strict=True):
                words = words_of(hyp, self.vocab, self.frame_s, r0 / SAMPLE_RATE)
                if len(wins) > 1:
                    words = [w for w in words if k0 / SAMPLE_RATE <= w.start < k1 / SAMPLE_RATE]
                for seg_words in _sentences(words):
                    yield Segment(id=index, start=seg_words[0].start, end=seg_words[-1].end,
                                  text=" ".join(w.word for w in seg_words), words=seg_words if keep_words else None)
                    index += 1

    def components(self) -> list[ComponentSpec]:
        return [ComponentSpec("model", params=int(self.params), devices=("cpu", "cuda", "rocm"), dtypes=("float32",),
                              backend="onnxruntime", kind="transformer", overhead_bytes=500 << 20)]

    def close(self) -> None:
        with self._lock:
            self.encoder = None  # type: ignore[assignment]
            self.decoder = None


def _torch_gpu(index: int) -> Any:
    """The torch device for GPU log-mel features, when torch sees a CUDA/ROCm GPU; else None."""
    try:
        import torch
    except ImportError:
        return None
    return torch.device("cuda", index) if torch.cuda.is_available() else None


def _sentences(words: list[Word], max_words: int = 60) -> Iterator[list[Word]]:
    """Segments: words up to a sentence end (or ``max_words``)."""
    cur: list[Word] = []
    for w in words:
        cur.append(w)
        if w.word.endswith(SENTENCE_END) or len(cur) >= max_words:
            yield cur
            cur = []
    if cur:
        yield cur
