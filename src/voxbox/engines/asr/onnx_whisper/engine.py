"""The onnx-whisper engine object: encoder and decoder sessions, greedy decoding with Whisper's
rules, and the shared core's long-form loop."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.engines.asr.onnx_whisper.providers import open_sessions
from voxbox.engines.asr.whisper.features import (
    CHUNK_FRAMES,
    CHUNK_SAMPLES,
    SAMPLE_RATE,
    log_mel,
    pad_or_trim,
)
from voxbox.engines.asr.whisper.segments import DecodeResult, sequential_segments
from voxbox.engines.asr.whisper.timestamps import apply_timestamp_rules, log_softmax
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.engines.asr.whisper.validate import check_call
from voxbox.engines.base import cancellable
from voxbox.engines.spec import build_options
from voxbox.errors import ModelLoadError, ModelNotFoundError
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
)

__all__ = ["OnnxWhisperEngine"]


class OnnxWhisperEngine:
    def __init__(self, model_dir: Path, *, device: str = "auto", threads: int = 0) -> None:
        self.model_dir = model_dir
        cfg_path = model_dir / "voxbox_onnx.json"
        for name in ("encoder.onnx", "decoder.onnx", "tokenizer.json", "voxbox_onnx.json"):
            if not (model_dir / name).is_file():
                raise ModelNotFoundError(
                    f"{model_dir} is not an onnx-whisper model: {name} is missing "
                    "(make one with `voxbox convert SRC OUT --to onnx`)",
                    param="model",
                )
        try:
            self.cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"could not read {cfg_path}: {exc}") from exc
        if not isinstance(self.cfg, dict) or not isinstance(self.cfg.get("vocab_size"), int):
            raise ModelLoadError(f"{cfg_path} is not an onnx-whisper config (no integer vocab_size)")
        self.encoder, self.decoder, kind, index, reason = open_sessions(
            model_dir, device, threads, int(self.cfg.get("params", 0)))
        used = self.decoder.get_providers()[0]
        self.provider = used
        try:
            self.tok = WhisperTokenizer.from_dir(model_dir, vocab_size=int(self.cfg["vocab_size"]))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a corrupt file
            raise ModelLoadError(f"could not load the tokenizer in {model_dir}: {exc}") from exc
        gen = self.cfg.get("generation", {})
        # The vocabulary decides, as in openai-whisper (generation_config's is_multilingual and
        # lang_to_id are not trusted: converted checkpoints sometimes carry a multilingual template).
        self.multilingual = self.tok.multilingual
        self.language_ids = {c: self.tok.language_ids.get(c, -1) for c in self.tok.languages}
        self.n_layers = int(self.cfg["n_layers"])
        self.n_heads = int(self.cfg["n_heads"])
        self.head_dim = int(self.cfg["head_dim"])
        self.n_mels = int(self.cfg["n_mels"])
        self.n_ctx = int(self.cfg.get("max_target_positions", 448))
        self.vocab_size = int(self.cfg["vocab_size"])
        suppress = gen.get("suppress_tokens")
        self.default_suppress = [int(t) for t in suppress] if suppress is not None else [-1]
        self.begin_suppress = self.tok.begin_suppress_tokens(gen.get("begin_suppress_tokens") or None)
        self.max_initial_timestamp_index = gen.get("max_initial_timestamp_index", 50)
        self._lock = threading.Lock()
        self.info = EngineInfo(
            name="onnx-whisper",
            task="asr",
            model=str(model_dir),
            device=kind if kind == "cpu" else f"{kind}:{index}",
            dtype=str(self.cfg.get("dtype", "float32")),
            sample_rate=SAMPLE_RATE,
            languages=tuple(self.language_ids),
            supports_translation=self.multilingual,
            supports_word_timestamps=False,
            max_concurrency=1,
            extra={"execution_provider": used, "providers": self.decoder.get_providers(),
                   "model_dir": str(model_dir), "threads": int(threads), "device_reason": reason},
        )

    # -- low level ----------------------------------------------------------------------------
    def encode(self, mel_window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_mels, 3000) or (batch, n_mels, 3000) log-mel -> cross K/V for the decoder."""
        x = mel_window if mel_window.ndim == 3 else mel_window[None]
        k, v = self.encoder.run(None, {"input_features": np.ascontiguousarray(x, dtype=np.float32)})
        return k, v

    def _empty_past(self, batch: int = 1) -> np.ndarray:
        return np.zeros((self.n_layers, batch, self.n_heads, 0, self.head_dim), np.float32)

    def step(self, ids: list[int] | np.ndarray, past: tuple[np.ndarray, np.ndarray] | None,
             cross: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Run the decoder on ``ids`` after ``past``: (last-token logits [batch, vocab], new past)."""
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim == 1:
            arr = arr[None]
        if past is None:
            past = (self._empty_past(arr.shape[0]), self._empty_past(arr.shape[0]))
        logits, pk, pv = self.decoder.run(None, {"input_ids": arr, "past_k": past[0], "past_v": past[1],
                                                 "cross_k": cross[0], "cross_v": cross[1]})
        return logits, (pk, pv)

    def suppress_list(self, suppress_tokens: list[int] | None) -> list[int]:
        """Never-sampled tokens: the call's list (default: the model's generation config) with ``-1``
        as the non-speech symbols, plus the special tokens."""
        return list(self.tok.suppress_tokens(self.default_suppress if suppress_tokens is None else suppress_tokens))

    def greedy(self, cross: tuple[np.ndarray, np.ndarray], prompt: list[int], *, max_new_tokens: int,
               timestamps: bool, suppress_tokens: list[int] | None, suppress_blank: bool = True,
               apply_suppress: bool = True) -> tuple[list[int], float]:
        """Greedy decoding of one window. Returns (generated tokens without eot, sum of log-probs).

        ``apply_suppress=False`` decodes the raw argmax (no suppression, no timestamp rules): the
        tests compare that with transformers' ``generate`` on random models.
        """
        eot = self.tok.eot
        suppress = np.array(self.suppress_list(suppress_tokens) if apply_suppress else [], dtype=np.int64)
        begin = np.array(self.begin_suppress, dtype=np.int64)
        out: list[int] = []
        total_lp = 0.0
        logits, past = self.step(prompt, None, cross)
        max_new = max(0, min(max_new_tokens, self.n_ctx - len(prompt)))
        for _ in range(max_new):
            row = logits[0].astype(np.float32).copy()
            if apply_suppress:
                if suppress_blank and not out and begin.size:
                    row[begin] = -np.inf
                if suppress.size:
                    row[suppress] = -np.inf
                if timestamps:
                    apply_timestamp_rules(row, out, eot=eot, no_timestamps=self.tok.no_timestamps,
                                             timestamp_begin=self.tok.timestamp_begin,
                                             max_initial_timestamp_index=self.max_initial_timestamp_index)
                else:
                    row[self.tok.timestamp_begin:] = -np.inf
            nxt = int(np.argmax(row))
            total_lp += float(log_softmax(row)[nxt])
            if nxt == eot:
                break
            out.append(nxt)
            if len(prompt) + len(out) >= self.n_ctx:
                break
            logits, past = self.step([nxt], past, cross)
        return out, total_lp

    def detect_language(self, cross: tuple[np.ndarray, np.ndarray]) -> tuple[str, float, dict[str, float]]:
        if not self.multilingual:
            return "en", 1.0, {"en": 1.0}
        logits, _ = self.step([self.tok.sot], None, cross)
        codes = list(self.language_ids)
        ids = np.array([self.language_ids[c] for c in codes])
        lp = log_softmax(logits[0][ids])
        probs = np.exp(lp)
        best = int(np.argmax(probs))
        return codes[best], float(probs[best]), {c: float(p) for c, p in zip(codes, probs, strict=True)}

    def sot_sequence(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        return self.tok.sot_sequence(language, task, timestamps)

    # -- API ------------------------------------------------------------------------------------
    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        lang = check_call(audio, language, prompt, word_timestamps, task, engine="onnx-whisper", model=self.info.model,
                          languages=self.tok.languages, word_timestamps_supported=False)
        from voxbox.engines.asr.onnx_whisper import OnnxWhisperOptions

        opts = build_options(OnnxWhisperOptions, options, **kwargs)
        timestamps = not opts.without_timestamps
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        duration = len(samples) / SAMPLE_RATE
        with timings.measure("features"):
            mel = log_mel(samples, self.n_mels, padding=CHUNK_SAMPLES)
        content_frames = mel.shape[-1] - CHUNK_FRAMES
        first: tuple[np.ndarray, np.ndarray] | None = None
        lang_prob = 1.0
        if lang is None:
            # Detection sees the first 30 s of the padded log-mel, as the reference does.
            with self._lock:
                with timings.measure("encode"):
                    first = self.encode(pad_or_trim(mel[:, :CHUNK_FRAMES]))
                with timings.measure("decode"):
                    lang, lang_prob, _ = self.detect_language(first)
            if content_frames < CHUNK_FRAMES:
                # decoding a short window uses the content's log-mel zero-padded to 30 s (as
                # openai-whisper, faster-whisper and torch-whisper do), not the log-mel of padded silence
                first = None
        info = TranscriptionInfo(
            language=lang,
            language_probability=lang_prob,
            duration=duration,
            task=task,  # type: ignore[arg-type]
            options={
                "model": self.info.model, "beam_size": 1, "temperature": [0.0], "without_timestamps": not timestamps,
                "device": self.info.device, "execution_provider": self.provider, "dtype": self.info.dtype,
            },
            timings=timings,
        )
        decode = self._window_decoder(mel, first, self.sot_sequence(lang, task, timestamps), opts, timings)
        segments = sequential_segments(self.tok, decode, content_frames=content_frames, duration=duration,
                                       timestamps=timestamps, condition_on_previous_text=False,
                                       prompt=self.tok.prompt_tokens(prompt))
        return cancellable(segments, cancel), info

    def _window_decoder(self, mel: np.ndarray, first: tuple[np.ndarray, np.ndarray] | None, sot: list[int],
                        opts: Any, timings: StageTimings) -> Callable[[int, int, list[int]], DecodeResult]:
        """``decode(seek, frames, previous)`` for the shared long-form loop (greedy, no fallback);
        the first window reuses the encoder output of language detection when it has one."""
        max_new = opts.max_new_tokens or self.n_ctx // 2
        suppress = list(opts.suppress_tokens) if opts.suppress_tokens is not None else None

        def decode(seek: int, frames: int, previous: list[int]) -> DecodeResult:
            prompt = self.tok.decoder_prompt(sot, previous, self.n_ctx)
            with self._lock:
                cross = first if seek == 0 else None  # the loop visits seek 0 once
                if cross is None:
                    with timings.measure("encode"):
                        cross = self.encode(pad_or_trim(mel[:, seek : seek + frames]))
                with timings.measure("decode"):
                    tokens, sum_lp = self.greedy(cross, prompt, max_new_tokens=max_new,
                                                 timestamps=not opts.without_timestamps, suppress_tokens=suppress,
                                                 suppress_blank=opts.suppress_blank is not False)
            return DecodeResult(tokens, sum_lp)

        return decode

    def components(self) -> list[ComponentSpec]:
        devices = ("cpu", "cuda", "rocm")
        params = int(self.cfg.get("params", 0))
        dtype = self.info.dtype or "float32"
        return [
            ComponentSpec(name="encoder", params=params // 2, devices=devices, dtypes=(dtype,), backend="onnxruntime",
                          kind="transformer"),
            ComponentSpec(name="decoder", params=params - params // 2, devices=devices, dtypes=(dtype,),
                          backend="onnxruntime", kind="transformer", overhead_bytes=64 << 20),
        ]

    def close(self) -> None:
        self.encoder = None  # type: ignore[assignment]
        self.decoder = None  # type: ignore[assignment]
