"""The one scoring normaliser and word error rate, used by tests, ``voxbox bench`` and ``voxbox convert``.

``normalize_text`` is Whisper's English text normaliser (``EnglishTextNormalizer`` from OpenAI's
whisper repository, as packaged on PyPI by ``whisper-normalizer``): lower-case; brackets and
fillers ("um", "uh") removed; contractions expanded ("isn't" -> "is not"); titles spelled out
("Dr." -> "doctor"); spelled-out numbers turned into digits ("Chapter two" and "Chapter 2" both
become "chapter 2"; "$1,249.99" and "one thousand two hundred forty nine dollars and ninety nine
cents" both become "$1249.99"); British spellings mapped to American; other punctuation dropped.
It comes from the ``whisper-normalizer`` package (a dependency of voxbox).
This is the normaliser behind published English WER numbers, so ours are comparable.

``wer`` is the corpus word error rate (total word edits / total reference words) of normalised
texts; ``cer`` the same over characters. ``clip=True`` caps a score at 1.0 (the bench does, so a
hallucinating model cannot dominate an average).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["cer", "edit_distance", "normalize_text", "wer", "word_errors"]


@functools.lru_cache(maxsize=1)
def _normalizer() -> Callable[[str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer
    except ImportError as exc:  # pragma: no cover - a declared dependency
        from voxbox.errors import EngineUnavailableError

        raise EngineUnavailableError(f"whisper-normalizer is not installed ({exc})",
                                     install_hint="pip install whisper-normalizer") from exc
    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    """Whisper's English normalisation: the form WER and CER are computed on.

    One addition: tokens left with no letter or digit are dropped (Whisper's normaliser keeps the
    last "." of a trailing "...", which would count as a word).
    """
    return " ".join(w for w in _normalizer()(text).split() if any(ch.isalnum() for ch in w))


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> int:
    """Levenshtein distance between two token sequences (vectorised one row at a time).

    Row update: d[j] = min(prev[j] + 1, prev[j-1] + cost_j, d[j-1] + 1); the left-to-right
    dependency is solved in closed form as ``j + cummin(a_k - k)``.
    """
    n, m = len(ref), len(hyp)
    if n == 0:
        return m
    if m == 0:
        return n
    vocab: dict[Any, int] = {}
    r = np.fromiter((vocab.setdefault(x, len(vocab)) for x in ref), dtype=np.int64, count=n)
    h = np.fromiter((vocab.setdefault(x, len(vocab)) for x in hyp), dtype=np.int64, count=m)
    idx = np.arange(m + 1, dtype=np.int64)
    prev = idx.copy()
    for i in range(1, n + 1):
        a = np.empty(m + 1, dtype=np.int64)
        a[0] = i
        a[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (h != r[i - 1]))
        prev = idx + np.minimum.accumulate(a - idx)
    return int(prev[m])


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, number of reference words) of already-normalised strings."""
    ref, hyp = reference.split(), hypothesis.split()
    return edit_distance(ref, hyp), len(ref)


def _pairs(reference: str | Sequence[str], hypothesis: str | Sequence[str]) -> list[tuple[str, str]]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError("reference and hypothesis lists differ in length")
    return list(zip(refs, hyps, strict=True))


def _rate(edits: int, total: int, clip: bool) -> float:
    if total == 0:
        return 0.0 if edits == 0 else 1.0
    rate = edits / total
    return min(1.0, rate) if clip else rate


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str], *, normalize: bool = True,
        clip: bool = False) -> float:
    """Word error rate; corpus-level (total edits / total reference words) when given lists.

    An empty reference scores 0.0 against an empty hypothesis and 1.0 against anything else.
    """
    edits = total = 0
    for r, h in _pairs(reference, hypothesis):
        if normalize:
            r, h = normalize_text(r), normalize_text(h)
        e, n = word_errors(r, h)
        edits += e
        total += n
    return _rate(edits, total, clip)


def cer(reference: str | Sequence[str], hypothesis: str | Sequence[str], *, normalize: bool = True,
        clip: bool = False) -> float:
    """Character error rate on normalised text (spaces count); corpus-level when given lists."""
    edits = total = 0
    for r, h in _pairs(reference, hypothesis):
        if normalize:
            r, h = normalize_text(r), normalize_text(h)
        edits += edit_distance(r, h)
        total += len(r)
    return _rate(edits, total, clip)
