"""Partial transcripts from repeated decodes of a growing utterance ("local agreement").

Each re-decode of the audio so far gives a hypothesis; a word is final enough to show once two
consecutive hypotheses agree on it and on everything before it (compared without case and
punctuation, which Whisper changes as a sentence grows: "times." becomes "times,"). Shown text
cannot be taken back, so only words extending what was already shown are emitted, in the newest
hypothesis's spelling. Used by the Realtime sessions (``delta`` events) and the Wyoming front
(``transcript-chunk`` events).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

__all__ = ["Agreement", "same_words"]

_PUNCT = string.punctuation + "…“”‘’«»¿¡"


def _key(word: str) -> str:
    return word.strip(_PUNCT).lower()


def same_words(a: list[str], b: list[str]) -> bool:
    return len(a) == len(b) and all(_key(x) == _key(y) for x, y in zip(a, b, strict=True))


@dataclass
class Agreement:
    emitted: list[str] = field(default_factory=list)  # words already shown
    last: list[str] = field(default_factory=list)  # the previous hypothesis

    def update(self, text: str) -> str:
        """Feed a hypothesis; the text to append to what was shown ("" if nothing new is agreed)."""
        words = text.split()
        prev, self.last = self.last, words
        agreed = 0
        while agreed < min(len(prev), len(words)) and _key(prev[agreed]) == _key(words[agreed]):
            agreed += 1
        return self._extend(words, agreed)

    def final(self, text: str) -> str:
        """The final transcript: what it adds to the shown words ("" if it does not extend them)."""
        words = text.split()
        return self._extend(words, len(words))

    def _extend(self, words: list[str], upto: int) -> str:
        n = len(self.emitted)
        if upto <= n or not same_words(words[:n], self.emitted):
            return ""
        self.emitted = self.emitted + words[n:upto]
        return (" " if n else "") + " ".join(words[n:upto])
