"""Text -> Kokoro phonemes through espeak-ng, and phoneme spans -> word timestamps.

Phonemizer: the ``phonemizer`` package's espeak-ng backend on the libespeak-ng and data that the
``espeakng-loader`` wheel ships (both from PyPI, no system package, offline) — what ``kokoro-onnx``
uses, with the same settings (stress marks kept, punctuation preserved, characters outside the
model's vocabulary dropped), so voxbox and kokoro-onnx feed the model the same ids. espeak-ng keeps
process-global state, so every call holds one lock.

Languages: Kokoro's language letters (the first letter of a voice name: ``a`` American English,
``b`` British English, ``e`` Spanish, ``f`` French, ``h`` Hindi, ``i`` Italian, ``j`` Japanese,
``p`` Brazilian Portuguese, ``z`` Mandarin) or ISO codes map to espeak-ng voices.

Text normalisation (numbers, dates, URLs ... spelled out) is a hook: :func:`normalize_hook` uses
``voxbox.text.normalize_for_speech`` for English when that function exists and returns the text
unchanged otherwise (espeak-ng still reads digits and common abbreviations itself).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from voxbox.errors import BadInputError, EngineUnavailableError
from voxbox.types import Word

__all__ = ["LANGS", "Phonemizer", "espeak_language", "normalize_hook", "split_phonemes", "word_spans"]

INSTALL_HINT = "pip install 'voxbox[kokoro]'  (phonemizer, espeakng-loader)"

#: Kokoro language letter -> espeak-ng language.
LANGS: dict[str, str] = {"a": "en-us", "b": "en-gb", "e": "es", "f": "fr-fr", "h": "hi", "i": "it", "j": "ja",
                         "p": "pt-br", "z": "cmn"}
_ISO: dict[str, str] = {"en": "en-us", "en-us": "en-us", "en-gb": "en-gb", "es": "es", "fr": "fr-fr", "fr-fr": "fr-fr",
                        "hi": "hi", "it": "it", "ja": "ja", "pt": "pt-br", "pt-br": "pt-br", "zh": "cmn", "cmn": "cmn"}
MAX_PHONEMES = 510  # the model's context is 512 tokens, two of them pads
_LOCK = threading.Lock()


def espeak_language(language: str | None, voice: str | None) -> str:
    """espeak-ng language for ``language`` (ISO code or Kokoro letter); None = from the voice's letter."""
    if language:
        key = language.strip().lower().replace("_", "-")
        if key in LANGS:
            return LANGS[key]
        if key in _ISO:
            return _ISO[key]
        known = ", ".join(sorted(set(_ISO) | set(LANGS)))
        raise BadInputError(f"Kokoro does not speak language {language!r}; known: {known}", param="language")
    letter = (voice or "a").strip().lower()[:1]
    return LANGS.get(letter, "en-us")


def normalize_hook(text: str, language: str) -> str:
    """English text normalisation by ``voxbox.text`` when it offers one; identity otherwise."""
    if not language.startswith("en"):
        return text
    try:
        from voxbox.text import normalize_for_speech  # type: ignore[attr-defined]
    except ImportError:
        return text
    out = normalize_for_speech(text)
    return out if isinstance(out, str) and out.strip() else text


def _quiet_logger() -> logging.Logger:
    """phonemizer logs a warning for every words-count mismatch; voxbox expects them (see word_spans)."""
    log = logging.getLogger("voxbox.kokoro.phonemizer")
    log.setLevel(logging.ERROR)
    return log


class Phonemizer:
    """espeak-ng through ``phonemizer``, one backend per language, calls serialised."""

    def __init__(self, vocab: dict[str, int]) -> None:
        self.vocab = vocab
        self._backends: dict[str, Any] = {}
        try:
            import espeakng_loader  # type: ignore[import-untyped]
            from phonemizer.backend import EspeakBackend  # type: ignore[import-untyped]
            from phonemizer.backend.espeak.wrapper import EspeakWrapper  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineUnavailableError(f"kokoro needs phonemizer and espeakng-loader ({exc})",
                                         install_hint=INSTALL_HINT) from exc
        self._backend_cls = EspeakBackend
        with _LOCK:
            EspeakWrapper.set_data_path(espeakng_loader.get_data_path())
            EspeakWrapper.set_library(espeakng_loader.get_library_path())

    def _backend(self, language: str) -> Any:
        backend = self._backends.get(language)
        if backend is None:
            try:
                backend = self._backend_cls(language, preserve_punctuation=True, with_stress=True,
                                            language_switch="remove-flags", logger=_quiet_logger())
            except RuntimeError as exc:
                raise BadInputError(f"espeak-ng has no language {language!r}: {exc}", param="language") from exc
            self._backends[language] = backend
        return backend

    def filter(self, phonemes: str) -> str:
        return "".join(p for p in phonemes if p in self.vocab)

    def __call__(self, text: str, language: str) -> str:
        """One sentence -> the phoneme string the model reads (out-of-vocabulary symbols dropped)."""
        return self.many([text], language)[0]

    def many(self, texts: Sequence[str], language: str) -> list[str]:
        with _LOCK:
            out = self._backend(language).phonemize(list(texts), strip=False)
        return [" ".join(self.filter(p).split()) for p in out]


_BREAKS = (re.compile(r"(?<=[.!?…])\s+"), re.compile(r"(?<=[,;:—])\s+"), re.compile(r"\s+"))


def split_phonemes(phonemes: str, limit: int = MAX_PHONEMES) -> list[str]:
    """Pieces of at most ``limit`` phonemes, cut at sentence, clause, then word breaks."""
    if len(phonemes) <= limit:
        return [phonemes] if phonemes else []
    for pattern in _BREAKS:
        parts = [p for p in pattern.split(phonemes) if p]
        if len(parts) > 1:
            out: list[str] = []
            cur = ""
            for part in parts:
                cand = f"{cur} {part}" if cur else part
                if len(cand) <= limit:
                    cur = cand
                    continue
                if cur:
                    out.append(cur)
                cur = part
            if cur:
                out.append(cur)
            return [q for piece in out for q in split_phonemes(piece, limit)]
    return [phonemes[i:i + limit] for i in range(0, len(phonemes), limit)]


_WORD = re.compile(r"\S+")
_PUNCT = set(";:,.!?—…\"()“”¡¿«»'-")


def _groups(phonemes: str) -> list[tuple[int, int]]:
    """(first, last + 1) phoneme index of each space-separated group, punctuation at the edges excluded."""
    out = []
    for m in _WORD.finditer(phonemes):
        a, b = m.start(), m.end()
        while a < b and phonemes[a] in _PUNCT:
            a += 1
        while b > a and phonemes[b - 1] in _PUNCT:
            b -= 1
        if b > a:
            out.append((a, b))
    return out


def text_words(text: str) -> list[str]:
    """The words of ``text`` a listener hears: whitespace tokens with a letter or digit, edge punctuation off."""
    out = []
    for tok in text.split():
        word = tok.strip("".join(_PUNCT))
        if any(ch.isalnum() for ch in word):
            out.append(word)
    return out


def word_spans(text: str, phonemes: str, isolated: Callable[[list[str]], list[str]]) -> list[tuple[str, int, int]]:
    """(word, first phoneme index, last + 1) for each word of ``text`` in ``phonemes``.

    espeak-ng keeps one space-separated group per word, except where it runs short function words
    together ("of a" -> ``əvə``) or reads one token as several words (numbers). When the counts
    agree the groups map one to one; otherwise the words are placed by the lengths of their
    isolated phonemizations (``isolated(words)``) along the sentence's phonemes, boundaries snapped
    to the nearest group break."""
    words = text_words(text)
    groups = _groups(phonemes)
    if not words or not groups:
        return []
    if len(words) == len(groups):
        return [(w, a, b) for w, (a, b) in zip(words, groups, strict=True)]
    lengths = np.array([max(1, len(p.replace(" ", ""))) for p in isolated(words)], dtype=np.float64)
    # positions along the concatenated group letters
    letters = np.array([b - a for a, b in groups], dtype=np.float64)
    total = float(letters.sum())
    bounds = np.concatenate([[0.0], np.cumsum(lengths) / lengths.sum() * total])
    group_ends = np.concatenate([[0.0], np.cumsum(letters)])
    scaled = np.diff(bounds)
    snapped = bounds.copy()
    for i in range(1, len(bounds) - 1):
        j = int(np.argmin(np.abs(group_ends - bounds[i])))
        cand = group_ends[j]
        # snap to a group break only when it keeps both neighbours non-empty and is near
        if snapped[i - 1] < cand < bounds[i + 1] and abs(cand - bounds[i]) <= 0.5 * min(scaled[i - 1], scaled[i]):
            snapped[i] = cand
    snapped = np.maximum.accumulate(snapped)

    def index(pos: float, end: bool) -> int:
        """Letter position -> phoneme index inside the groups."""
        g = int(np.searchsorted(group_ends, pos, side="left" if end else "right")) - 1
        g = min(max(g, 0), len(groups) - 1)
        a, b = groups[g]
        return int(min(b, a + round(pos - group_ends[g])))

    out = []
    for i, w in enumerate(words):
        a, b = index(snapped[i], False), index(snapped[i + 1], True)
        out.append((w, a, max(a, b)))
    return out


def words_from_edges(spans: list[tuple[str, int, int]], edges: np.ndarray, sample_rate: int,
                     offset_s: float) -> list[Word]:
    """Word timestamps from token edges (sample offset of each token boundary, leading pad first)."""
    out = []
    n = len(edges) - 3  # phoneme tokens: edges has one entry per token boundary, both pads included
    for w, a, b in spans:
        a = min(max(a, 0), n)
        b = min(max(b, a), n)
        start = float(edges[a + 1]) / sample_rate
        end = float(edges[b + 1]) / sample_rate
        out.append(Word(start=round(offset_s + start, 3), end=round(offset_s + end, 3), word=w))
    return out
