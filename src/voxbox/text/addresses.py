"""URLs and e-mail addresses as they are said: "www.example.org" -> "W W W dot example dot org",
"help@example.com" -> "help at example dot com". Part of the English TTS front-end
(:mod:`voxbox.text.normalize`); the scheme ("https://") is not read, labels without a vowel and
country-code domains are spelled letter by letter."""

from __future__ import annotations

import re

from voxbox.text import numbers as N
from voxbox.text import tables as T

__all__ = ["email_words", "spell_letters", "url_words"]


def spell_letters(s: str) -> str:
    """``"www"`` -> "W W W": letters the engines then say one by one."""
    return " ".join(ch.upper() for ch in s if ch.isalnum())


_URL_SEP = {".": " dot ", "/": " slash ", "-": " dash ", "_": " underscore ", ":": " colon ", "?": " question mark ",
            "=": " equals ", "&": " and ", "#": " hash ", "+": " plus ", "~": " tilde ", "%": " percent "}


def _spoken_label(label: str, tld: bool = False) -> str:
    if not label:
        return ""
    if label.isdigit():
        return N.cardinal(int(label)) if len(label) <= 4 else N.digits(label)
    low = label.lower()
    if low == "www" or len(low) == 1 or (tld and low in T.SPELLED_TLDS) or not re.search(r"[aeiouy]", low):
        return spell_letters(low)
    return re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", low)


def _spoken_address(addr: str) -> str:
    parts = re.split(r"([./\-_:?=&#+~%])", addr)
    host_end = addr.find("/")
    out: list[str] = []
    pos = 0
    for i, part in enumerate(parts):
        if i % 2:
            out.append(_URL_SEP[part])
        else:
            is_tld = (host_end < 0 or pos < host_end) and (i + 2 >= len(parts) or parts[i + 1] in "/:")
            out.append(_spoken_label(part, tld=is_tld and i > 0))
        pos += len(part)
    return " ".join("".join(out).split())


def email_words(m: re.Match[str]) -> str:
    return f"{_spoken_address(m.group(1))} at {_spoken_address(m.group(2))}"


def url_words(m: re.Match[str]) -> str:
    return _spoken_address(re.sub(r"^[a-zA-Z]+://", "", m.group(0)).rstrip("/"))
