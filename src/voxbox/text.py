"""Text normalisation and word error rate, shared by tests and the bench.

``normalize_text``: lower-case, hyphens/dashes/slashes become spaces, every other punctuation
character (apostrophes, commas inside numbers, ``$``...) is dropped, whitespace collapsed.
``wer`` uses jiwer when it is installed and a plain Levenshtein over words otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

__all__ = ["normalize_text", "wer", "word_errors"]

_SPACE_LIKE = re.compile(r"[-\u2010-\u2015/_]+")


def normalize_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _SPACE_LIKE.sub(" ", text)
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "S")))
    return " ".join(text.split())


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, number of reference words) of already-normalised strings."""
    ref, hyp = reference.split(), hypothesis.split()
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(reference: str | Sequence[str], hypothesis: str | Sequence[str], *, normalize: bool = True) -> float:
    """Word error rate (corpus-level when given lists: total errors / total reference words)."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    hyps = [hypothesis] if isinstance(hypothesis, str) else list(hypothesis)
    if len(refs) != len(hyps):
        raise ValueError("reference and hypothesis lists differ in length")
    if normalize:
        refs = [normalize_text(r) for r in refs]
        hyps = [normalize_text(h) for h in hyps]
    try:
        import jiwer

        return float(jiwer.wer(refs, hyps))
    except ImportError:
        errors = total = 0
        for r, h in zip(refs, hyps):
            e, n = word_errors(r, h)
            errors += e
            total += n
        return errors / max(total, 1)
