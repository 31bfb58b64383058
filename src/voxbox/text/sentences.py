"""Sentence splitting for streaming TTS: cut at real sentence ends only.

A ``.`` ends a sentence unless the next word starts with a lower-case letter or a digit, or the
word before it is a title ("Dr.", "St."), an initial ("J. K. Rowling"), or an upper-case dotted
acronym ("U.S. Army") or "e.g."/"i.e.". Decimals ("3.14"), times ("3:30") and addresses
("example.org") never split because no space follows their point or colon. ``!``, ``?``, ``;`` and
``:`` followed by a space end a sentence (each is a natural pause), and so does a blank line.
Sentences longer than ``max_chars`` are cut at a comma, else at a space.
"""

from __future__ import annotations

import re

from voxbox.text.tables import TITLES

__all__ = ["split_sentences"]

_BOUNDARY = re.compile(r"(?:[.!?;:\u3002\uff01\uff1f]+|\u2026)[\"'\u201d\u2019)\]]*\s+")
_PARAGRAPH = re.compile(r"\n\s*\n")
_NO_SPLIT_AFTER = frozenset(TITLES) | {"e.g", "i.e", "cf", "viz", "vs"}
_OPENERS = "\"'(\u201c\u2018["


def _ends_sentence(text: str, start: int, end: int) -> bool:
    """Whether the boundary text[start:end] (punctuation, closers, spaces) ends a sentence."""
    punct = text[start:end].rstrip()
    if not punct.startswith(".") or punct.startswith("..."):
        return True
    nxt = text[end:end + 1]
    if nxt.islower() or nxt.isdigit():
        return False
    word = text[text.rfind(" ", 0, start) + 1:start].lstrip(_OPENERS)
    if word in _NO_SPLIT_AFTER:
        return False
    if len(word) == 1 and word.isupper():  # an initial: "J. K. Rowling"
        return False
    letters = word.replace(".", "")
    # an upper-case dotted acronym runs on: "U.S. Army", "U.K. government"
    return not ("." in word and letters.isalpha() and letters.isupper() and len(letters) <= 4)


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """Split text into sentences for streaming; long sentences are cut at commas or spaces."""
    out: list[str] = []
    for para in _PARAGRAPH.split(text):
        para = " ".join(para.split())
        cut = 0
        pieces: list[str] = []
        for m in _BOUNDARY.finditer(para):
            if m.end() < len(para) and _ends_sentence(para, m.start(), m.end()):
                pieces.append(para[cut:m.end()])
                cut = m.end()
        pieces.append(para[cut:])
        for sent in pieces:
            out.extend(_chop(sent.strip(), max_chars))
    return out


def _chop(sent: str, max_chars: int) -> list[str]:
    out: list[str] = []
    while len(sent) > max_chars:
        cut = sent.rfind(", ", 0, max_chars)
        if cut < max_chars // 3:
            cut = sent.rfind(" ", 0, max_chars)
        if cut <= 0:
            cut = max_chars
        out.append(sent[: cut + 1].strip())
        sent = sent[cut + 1:].strip()
    if sent:
        out.append(sent)
    return out
