"""The Kokoro engine: sentences -> espeak-ng phonemes -> Kokoro-82M -> 24 kHz audio, with word times.

Stages: ``phonemize`` (normalisation hook + espeak-ng), ``synthesize`` (the model), ``align``
(word timestamps from the model's per-token frame counts). One chunk per sentence; a sentence
longer than the model's 510-phoneme context is cut at clause/word breaks and its pieces joined.

Word timestamps: the model predicts how many frames each phoneme lasts; the frame edges, scaled to
the audio's length, give each phoneme's span and each word's span is its phonemes' (see
``_phonemes.word_spans``). They collect in ``stream.details["words"]`` (a list of
:class:`~voxbox.types.Word`, seconds from the start of the whole stream) as chunks are produced.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from voxbox.engines.base import (
    EncodedVoice,
    SpeechStream,
    VoiceArg,
    split_sentences,
    validate_speed,
    validate_text,
)
from voxbox.engines.spec import build_options
from voxbox.errors import BadInputError, UnsupportedOperationError
from voxbox.types import (
    Audio,
    AudioChunk,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    StageTimings,
    Word,
)

from . import KokoroOptions
from ._backends import OnnxKokoro, TorchKokoro, vocab_from
from ._files import KokoroFiles
from ._phonemes import (
    MAX_PHONEMES,
    Phonemizer,
    espeak_language,
    normalize_hook,
    split_phonemes,
    word_spans,
    words_from_edges,
)
from ._voices import VoiceBank, style_row

__all__ = ["OPENAI_VOICES", "SAMPLE_RATE", "KokoroEngine", "token_edges", "trim_silence"]

SAMPLE_RATE = 24000
DEFAULT_VOICE = "af_heart"
SENTENCE_CHARS = 300  # keeps most sentences inside one 510-phoneme pass
#: OpenAI voice names -> Kokoro v1.0 voices (used when the voice exists in the loaded voices file).
OPENAI_VOICES = {"alloy": "af_alloy", "echo": "am_echo", "fable": "bm_fable", "onyx": "am_onyx", "nova": "af_nova",
                 "shimmer": "af_bella", "ash": "am_adam", "coral": "af_heart", "sage": "af_sarah",
                 "ballad": "bm_george", "verse": "am_michael", "marin": "af_kore", "cedar": "am_liam"}


def token_edges(duration: np.ndarray, samples: int) -> np.ndarray:
    """Sample offset of every token boundary (leading pad first): frame counts scaled to the audio."""
    frames = np.concatenate([[0], np.cumsum(np.asarray(duration, dtype=np.int64))])
    if frames[-1] <= 0:
        return np.zeros(len(frames), dtype=np.int64)
    return np.round(frames * (samples / frames[-1])).astype(np.int64)


def trim_silence(audio: np.ndarray, top_db: float = 60.0, frame: int = 2048, hop: int = 512) -> tuple[np.ndarray, int]:
    """(audio without leading/trailing frames ``top_db`` below the loudest, samples cut at the head)."""
    if audio.size < frame:
        return audio, 0
    n = 1 + (audio.size - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(audio[idx] ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-top_db / 20))
    if loud.size == 0:
        return audio[:0], 0
    start, end = int(loud[0] * hop), min(audio.size, int(loud[-1] * hop + frame))
    return audio[start:end], start


class KokoroEngine:
    """Kokoro-82M TTS over an :class:`OnnxKokoro` or :class:`TorchKokoro` backend."""

    def __init__(self, files: KokoroFiles, *, device: str = "auto", threads: int = 0, voice: str | None = None,
                 language: str | None = None, workers: int | None = None) -> None:
        self.files = files
        if files.backend == "onnx":
            self.backend: OnnxKokoro | TorchKokoro = OnnxKokoro(files.model, device=device, threads=threads)
            if workers is None:  # a GPU is launch-bound on Kokoro's many small kernels: two sentences overlap
                workers = 1 if self.backend.device == "cpu" else 2
        else:
            assert files.config is not None
            self.backend = TorchKokoro(files.model, files.config, device=device, threads=threads)
            workers = 1  # one module, one lock
        self.workers = max(1, int(workers or 1))
        self._pool: queue.SimpleQueue[OnnxKokoro | TorchKokoro] = queue.SimpleQueue()
        self._pool.put(self.backend)
        for _ in range(self.workers - 1):  # one session each, so their work runs side by side
            self._pool.put(OnnxKokoro(files.model, device=device, threads=threads))
        self.vocab, vocab_src = vocab_from(files.config, self.backend.metadata)
        self.voices = VoiceBank(files.voices)
        self.phonemizer = Phonemizer(self.vocab)
        self._lock = threading.Lock()
        names = tuple(self.voices.names)
        default = (voice or (DEFAULT_VOICE if DEFAULT_VOICE in names else names[0])).lower()
        self.openai_voices = {k: v for k, v in OPENAI_VOICES.items() if v in names}
        self.default_language = language
        self.info = EngineInfo(
            name="kokoro", task="tts", model=str(files.root), device=self.backend.device, dtype="float32",
            sample_rate=SAMPLE_RATE, voices=names, default_voice=default,
            languages=("en", "en-gb", "es", "fr", "hi", "it", "ja", "pt", "zh"),
            supports_word_timestamps=self.backend.has_durations, max_concurrency=2,
            extra={"backend": files.backend, "execution_provider": self.backend.provider, "vocab": vocab_src,
                   "model_file": files.model.name, "openai_voices": dict(self.openai_voices), "threads": threads,
                   "workers": self.workers},
        )
        self.resolve_voice(default)  # a bad default voice fails at load time
        self.info = dataclasses.replace(self.info, default_voice=default)

    # -- voices and text -------------------------------------------------------------------------
    def resolve_voice(self, voice: VoiceArg) -> tuple[str, np.ndarray]:
        """(voice name or mix as given, its style pack)."""
        if voice is None:
            voice = self.info.default_voice or DEFAULT_VOICE
        if isinstance(voice, (EncodedVoice, Audio)):
            raise UnsupportedOperationError("kokoro does not clone voices; pick a voice or a mix such as "
                                            "af_bella(2)+af_sky(1)", param="voice")
        if not isinstance(voice, str) or not voice.strip():
            raise BadInputError("voice must be a voice name or a mix such as af_bella(2)+af_sky(1)", param="voice")
        name = voice.strip().lower()
        name = self.openai_voices.get(name, name)
        return name, self.voices.resolve(name)

    def phonemize(self, text: str, language: str, normalize: bool = True) -> str:
        if normalize:
            text = normalize_hook(text, language)
        return self.phonemizer(text, language)

    def ids(self, phonemes: str) -> list[int]:
        return [self.vocab[p] for p in phonemes if p in self.vocab]

    # -- synthesis -------------------------------------------------------------------------------
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        text = validate_text(text)
        speed_v = validate_speed(speed)
        opts = build_options(KokoroOptions, options, **kwargs)
        name, pack = self.resolve_voice(voice)
        language = espeak_language(opts.language or self.default_language, name)
        want_words = self.backend.has_durations and opts.word_timestamps is not False
        sentences = split_sentences(text, max_chars=SENTENCE_CHARS)
        details: dict[str, Any] = {"voice": name, "language": language, "phonemes": []}
        if want_words:
            details["words"] = []
        token = cancel if cancel is not None else CancelToken()

        def work(sent: str, timings: StageTimings) -> tuple[str, np.ndarray, list[Word]] | None:
            token.check()
            with timings.measure("phonemize"):
                spoken = normalize_hook(sent, language) if opts.normalize is not False else sent
                phonemes = self.phonemizer(spoken, language)
            if not self.ids(phonemes):
                return None
            backend = self._pool.get()
            try:
                audio, words = self._sentence(backend, spoken, phonemes, pack, speed_v, bool(opts.trim), want_words,
                                              language, timings, token)
            finally:
                self._pool.put(backend)
            return phonemes, audio, words

        def gen(timings: StageTimings) -> Iterator[AudioChunk]:
            offset = 0
            index = 0
            for sent, done in self._ordered(sentences, work, timings):
                if done is None or done[1].size == 0:
                    continue
                phonemes, audio, words = done
                details["phonemes"].append(phonemes)
                if want_words:
                    at = offset / SAMPLE_RATE
                    details["words"].extend(Word(start=round(w.start + at, 3), end=round(w.end + at, 3), word=w.word)
                                            for w in words)
                offset += audio.size
                yield AudioChunk(audio, SAMPLE_RATE, index=index, text=sent)
                index += 1

        return SpeechStream(gen, SAMPLE_RATE, cancel=token, details=details)

    def _ordered(self, sentences: list[str], work: Callable[[str, StageTimings], Any],
                 timings: StageTimings) -> Iterator[tuple[str, Any]]:
        """(sentence, work(sentence)) in order; with several workers the next sentences are already
        being synthesised while one is consumed (their stage times then overlap)."""
        if self.workers == 1 or len(sentences) == 1:
            for sent in sentences:
                yield sent, work(sent, timings)
            return
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kokoro")
        pending: deque[tuple[str, Future[Any]]] = deque()
        todo = iter(sentences)
        try:
            for sent in todo:
                pending.append((sent, pool.submit(work, sent, timings)))
                if len(pending) >= self.workers:
                    break
            while pending:
                sent, fut = pending.popleft()
                result = fut.result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(work, nxt, timings)))
                yield sent, result
        finally:
            for _, fut in pending:
                fut.cancel()
            pool.shutdown(wait=False)

    def _sentence(self, backend: OnnxKokoro | TorchKokoro, text: str, phonemes: str, pack: np.ndarray, speed: float,
                  trim: bool, want_words: bool, language: str, timings: StageTimings,
                  cancel: CancelToken) -> tuple[np.ndarray, list[Word]]:
        """One sentence (split into <= 510-phoneme passes) -> (audio, its words, seconds from its start)."""
        parts: list[np.ndarray] = []
        words: list[Word] = []
        spans: list[tuple[str, int, int]] = []
        if want_words:
            with timings.measure("align"):
                spans = word_spans(text, phonemes, lambda ws: self.phonemizer.many(ws, language))
        pos = 0
        for piece in split_phonemes(phonemes, MAX_PHONEMES):
            cancel.check()
            start = phonemes.find(piece, pos)
            start = pos if start < 0 else start
            pos = start + len(piece)
            ids = self.ids(piece)
            if not ids:
                continue
            with timings.measure("synthesize"):
                audio, dur = backend.run(ids, style_row(pack, len(ids)), speed)
            head = 0
            if trim:
                audio, head = trim_silence(audio)
            if spans and dur is not None and len(dur) == len(ids) + 2:
                with timings.measure("align"):
                    edges = np.clip(token_edges(dur, audio.size + head) - head, 0, audio.size)
                    mine = [(w, a - start, b - start) for w, a, b in spans if start <= a < pos]
                    at = sum(p.size for p in parts) / SAMPLE_RATE
                    words.extend(words_from_edges(mine, edges, SAMPLE_RATE, at))
            parts.append(audio.astype(np.float32, copy=False))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return audio, words

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        raise UnsupportedOperationError("kokoro does not clone voices; mix voices instead (af_bella(2)+af_sky(1))",
                                        param="voice")

    def components(self) -> list[ComponentSpec]:
        return [ComponentSpec("model", params=int(self.backend.params), devices=("cpu", "cuda", "rocm"),
                              dtypes=("float32",), backend="onnxruntime" if self.files.backend == "onnx" else "torch",
                              kind="vocoder", overhead_bytes=200 << 20)]

    def close(self) -> None:
        with self._lock:
            self.backend = None  # type: ignore[assignment]
            while not self._pool.empty():
                self._pool.get_nowait()
