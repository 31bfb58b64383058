"""What a TTS engine is handed: clean, split, normalised sentences it can actually speak.

``speech_sentences(text, language="en", engine="hibari")`` is the one call an engine makes before
its phonemizer, and it runs before the engine returns its lazy stream, so bad text fails as a
``BadInputError`` (HTTP 400) instead of an empty or broken body:

1. :func:`clean_text`: NFKC; control characters become spaces (newlines kept for paragraphs);
   format characters (bidi marks, zero-width joiners), lone surrogates, private-use and unassigned
   code points are dropped. Nothing an engine's C code could choke on gets through.
2. :func:`voxbox.text.sentences.split_sentences`.
3. For English (``language`` starting with "en"): :func:`voxbox.text.normalize.normalize_for_speech`
   when ``normalize`` is true (callers that pre-normalise pass ``False``); either way, digit runs
   longer than 15 digits are read digit by digit (hibari's G2P raises IndexError on 37+ digits),
   and letters of other scripts (Hebrew, CJK, Cyrillic...) and pictographic symbols (emoji) are
   dropped, because an English phonemizer cannot say them.
4. :func:`ensure_speakable`: at least one sentence must keep a letter or digit the engine's
   language can say, else ``BadInputError("nothing speakable for this engine/voice ...",
   param="text")``.
"""

from __future__ import annotations

import re
import unicodedata

from voxbox.errors import BadInputError
from voxbox.text import numbers as N
from voxbox.text.normalize import normalize_for_speech
from voxbox.text.sentences import split_sentences

__all__ = ["clean_text", "ensure_speakable", "is_english", "speakable", "speech_sentences"]

_DROP_CATEGORIES = frozenset(("Cf", "Cs", "Co", "Cn"))
_LONG_NUMBER = re.compile(r"\d[\d,.]{15,}\d")
_LATIN_WORD = re.compile(r"[A-Za-z0-9]")


def is_english(language: str | None) -> bool:
    return (language or "").lower().replace("_", "-").split("-")[0] == "en"


def clean_text(text: str) -> str:
    """NFKC, control characters to spaces (newlines kept), invisible and invalid code points dropped."""
    text = "".join(ch for ch in text if not 0xD800 <= ord(ch) <= 0xDFFF)  # lone surrogates: NFKC would keep them
    text = unicodedata.normalize("NFKC", text)
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isascii() and (ch.isprintable() or ch == "\n"):
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" or cat == "Zl" or cat == "Zp":
            out.append("\n" if ch in "\n\u2028\u2029" else " ")
        elif cat not in _DROP_CATEGORIES:
            out.append(ch)
    return "".join(out)


def _latin_only(text: str) -> str:
    """Keep ASCII, Latin letters (with accents), punctuation and spaces; other scripts and
    pictographs become spaces."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if cat[0] == "L":
            out.append(ch if "LATIN" in unicodedata.name(ch, "") else " ")
        elif cat[0] in "PZ":
            out.append(ch)
        elif cat[0] == "M":
            continue
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def _long_numbers_as_digits(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        count = sum(c.isdigit() for c in s)
        return N.digits(s) if count > N.MAX_CARDINAL_DIGITS else s

    return _LONG_NUMBER.sub(repl, text)


def speakable(text: str, language: str | None) -> bool:
    """Whether ``text`` (already prepared) holds something an engine of ``language`` can say."""
    if is_english(language):
        return bool(_LATIN_WORD.search(text)) or any(ch.isalpha() and "LATIN" in unicodedata.name(ch, "")
                                                     for ch in text if not ch.isascii())
    return any(ch.isalnum() for ch in text)


def ensure_speakable(sentences: list[str], language: str | None, engine: str = "this engine") -> None:
    """Raise ``BadInputError(param="text")`` when no sentence has anything ``language`` can say."""
    if not any(speakable(s, language) for s in sentences):
        what = "English (Latin letters and digits)" if is_english(language) else f"language {language!r}"
        raise BadInputError(f"nothing speakable for this engine/voice: {engine} speaks {what}, and the text has "
                            "none", param="text")


def prepare_sentence(sentence: str, language: str | None, normalize: bool = True) -> str:
    """One split sentence -> the text the engine's phonemizer gets ("" if nothing is left)."""
    if not is_english(language):
        return sentence
    if normalize:
        sentence = normalize_for_speech(sentence)
    else:
        sentence = _long_numbers_as_digits(sentence)
    return _latin_only(sentence)


def speech_sentences(text: str, *, language: str | None = "en", normalize: bool = True, engine: str = "this engine",
                     max_chars: int = 400) -> list[str]:
    """Clean, split, normalise and check: the sentences an engine should synthesise, in order."""
    prepared = [prepare_sentence(s, language, normalize) for s in split_sentences(clean_text(text), max_chars)]
    sentences = [s for s in prepared if speakable(s, language)]
    ensure_speakable(sentences, language, engine)
    return sentences
