"""English TTS front-end: write out what a phonemizer would misread, before it phonemizes.

``normalize_for_speech("Dr. Nguyen paid $1,249.99 on 7/4/2024 at 3:30 p.m.")`` ->
"Doctor Nguyen paid one thousand two hundred forty nine dollars and ninety nine cents on July fourth,
twenty twenty four at three thirty P M."

Rules run in a fixed order on one sentence; each turns a pattern into words, so later rules never
see the digits an earlier rule consumed. Order: URLs and e-mail addresses, dates, times, phone
numbers, money, percentages, temperatures, units, titles and abbreviations, Roman numerals,
identifiers ("error 404"), ordinals, decades, fractions, ranges, years, decimals, plain numbers,
symbols, plural acronyms. Punctuation that shapes prosody (commas, final periods, question marks)
is kept. Deterministic and regex-only (about 20 µs per short sentence).

Engines call it through :func:`voxbox.text.speech_sentences`; ``normalize=False`` there skips it
for callers that pre-normalise their text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from voxbox.text import numbers as N
from voxbox.text import tables as T
from voxbox.text.addresses import email_words as _email
from voxbox.text.addresses import spell_letters
from voxbox.text.addresses import url_words as _url

__all__ = ["normalize_for_speech", "spell_letters"]


_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_Rule = tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]


def _alt(words: object) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # type: ignore[call-overload]


def _keep_final_dot(m: re.Match[str], words: str) -> str:
    """An abbreviation's period that also ended the sentence stays as the sentence's period."""
    return words + "." if m.group(0).endswith(".") and not m.string[m.end():].strip() else words


def _is_one(num: str) -> bool:
    return num.replace(",", "") in ("1", "1.0", "-1")


# -- dates and times ---------------------------------------------------------------------------
_MONTH_RE = r"(?:" + _alt(list(T.MONTHS) + [m.capitalize() for m in T.MONTH_ABBREV]) + r")"


def _date_words(year: str | None, month: int, day: int) -> str | None:
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    words = f"{T.MONTHS[month - 1]} {N.ordinal(day)}"
    return f"{words}, {N.year(int(year))}" if year else words


def _date_iso(m: re.Match[str]) -> str:
    return _date_words(m.group(1), int(m.group(2)), int(m.group(3))) or m.group(0)


def _date_slash(m: re.Match[str]) -> str:
    a, b, y = int(m.group(1)), int(m.group(2)), m.group(3)
    if len(y) == 2:
        y = ("19" if int(y) > 30 else "20") + y
    month, day = (a, b) if a <= 12 else (b, a)
    return _date_words(y, month, day) or m.group(0)


def _month_name(s: str) -> str:
    return T.MONTH_ABBREV.get(s.lower()[:4] if s.lower().startswith("sept") else s.lower()[:3], s)


def _month_day(m: re.Match[str]) -> str:
    day = int(m.group(2))
    if not 1 <= day <= 31:
        return m.group(0)
    words = f"{_month_name(m.group(1))} {N.ordinal(day)}"
    return f"{words}, {N.year(int(m.group(3)))}" if m.group(3) else words


def _day_month(m: re.Match[str]) -> str:
    day = int(m.group(2))
    if not 1 <= day <= 31:
        return m.group(0)
    words = f"the {N.ordinal(day)} of {_month_name(m.group(3))}"
    return f"{words}, {N.year(int(m.group(4)))}" if m.group(4) else words


def _ampm(m: re.Match[str], letter: str | None) -> str:
    return "" if not letter else " " + ("A M" if letter.lower() == "a" else "P M")


def _time(m: re.Match[str]) -> str:
    h, mi, sec, ap = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    if h > 24 or mi > 59 or (sec and int(sec) > 59):
        return m.group(0)
    if mi == 0:
        words = N.cardinal(h) + ("" if ap or sec else (" hundred" if h > 12 or m.group(1).startswith("0")
                                                       else " o'clock"))
    else:
        words = f"{N.cardinal(h)} {'oh ' if mi < 10 else ''}{N.cardinal(mi)}"
    if sec:
        words += f" and {N.cardinal(int(sec))} second{'' if int(sec) == 1 else 's'}"
    return _keep_final_dot(m, words + _ampm(m, ap))


def _hour_ampm(m: re.Match[str]) -> str:
    return _keep_final_dot(m, N.cardinal(int(m.group(1))) + _ampm(m, m.group(2)))


# -- phone numbers ---------------------------------------------------------------------------
def _phone(m: re.Match[str]) -> str:
    groups = [g for g in m.groups() if g]
    head = ""
    if m.group(0).lstrip().startswith("+"):
        head = "plus "
    return head + ", ".join(N.digits(g, zero="oh") for g in groups)


# -- money, percentages, temperatures, units ----------------------------------------------------
def _money_words(amount: str, cur: str, scale: str | None) -> str:
    one, many, minor_one, minor_many = T.CURRENCIES[cur]
    neg = amount.startswith("-")
    amount = amount.lstrip("-").replace(",", "")
    minus = "minus " if neg else ""
    if scale:
        return f"{minus}{N.decimal(amount)} {T.SCALE_WORDS.get(scale, scale)} {many}"
    whole, _, frac = amount.partition(".")
    if frac and (len(frac) != 2 or not minor_one):
        return f"{minus}{N.decimal(amount)} {many}"
    w, c = int(whole or 0), int(frac or 0)
    parts = []
    if w or not c:
        parts.append(f"{N.cardinal(w)} {one if w == 1 else many}")
    if c:
        parts.append(f"{N.cardinal(c)} {minor_one if c == 1 else minor_many}")
    return minus + " and ".join(parts)


def _money_prefix(m: re.Match[str]) -> str:
    sign = "-" if m.group(1) else ""
    return _money_words(sign + m.group(3), m.group(2), m.group(4))


def _money_suffix(m: re.Match[str]) -> str:
    return _money_words(m.group(1), m.group(3), m.group(2))


def _cents(m: re.Match[str]) -> str:
    return f"{N.decimal(m.group(1))} cent{'' if _is_one(m.group(1)) else 's'}"


def _percent(m: re.Match[str]) -> str:
    return f"{N.decimal(m.group(1))} percent"


def _degrees(m: re.Match[str]) -> str:
    num, scale = m.group(1), m.group(2)
    words = f"{N.decimal(num)} degree{'' if _is_one(num) else 's'}"
    return words + {"C": " Celsius", "F": " Fahrenheit", "K": " Kelvin"}.get(scale or "", "")


def _unit(m: re.Match[str]) -> str:
    one, many = T.UNITS[m.group(2)]
    return f"{N.decimal(m.group(1))} {one if _is_one(m.group(1)) else many}"


def _bare_unit(m: re.Match[str]) -> str:
    return T.UNITS[m.group(1)][1]


# -- abbreviations and Roman numerals -----------------------------------------------------------
def _title(m: re.Match[str]) -> str:
    return T.TITLES[m.group(1)] + " "


def _street(m: re.Match[str]) -> str:
    return _keep_final_dot(m, f"{m.group(1)} {T.STREET[m.group(2)]}")


def _abbrev(m: re.Match[str]) -> str:
    return _keep_final_dot(m, T.ABBREVIATIONS[m.group(1)])


def _dotted_acronym(m: re.Match[str]) -> str:
    return _keep_final_dot(m, m.group(0).replace(".", "").upper())


_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def _roman(s: str) -> int:
    vals = [_ROMAN_VALUES[c] for c in s]
    return sum(-v if i + 1 < len(vals) and vals[i + 1] > v else v for i, v in enumerate(vals))


def _roman_ordinal(m: re.Match[str]) -> str:
    return f"{m.group(1)} the {N.ordinal(_roman(m.group(2)))}"


def _roman_cardinal(m: re.Match[str]) -> str:
    return f"{m.group(1)} {N.cardinal(_roman(m.group(2)))}"


# -- numbers ------------------------------------------------------------------------------------
def _identifier(m: re.Match[str]) -> str:
    return f"{m.group(1)} {N.identifier(m.group(2))}"


def _hash_number(m: re.Match[str]) -> str:
    return "number " + N.cardinal(int(m.group(1)))


def _ordinal(m: re.Match[str]) -> str:
    return N.ordinal(int(m.group(1)))


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _decade(m: re.Match[str]) -> str:
    return _plural(N.year(int(m.group(1))))


def _short_decade(m: re.Match[str]) -> str:
    return _plural(N.cardinal(int(m.group(1))))


def _fraction_words(num: int, den: int) -> str:
    if den in T.FRACTIONS:
        one, many = T.FRACTIONS[den]
    else:
        one = N.ordinal(den)
        many = one + "s"
    return f"{N.cardinal(num)} {one if num == 1 else many}"


def _fraction(m: re.Match[str]) -> str:
    num, den = int(m.group(1)), int(m.group(2))
    if (num, den) == (24, 7) or num == den:
        return f"{N.cardinal(num)} {N.cardinal(den)}"
    if 2 <= den <= 16 and num > 0:
        return _fraction_words(num, den)
    return f"{N.cardinal(num)} over {N.cardinal(den)}"


def _mixed_fraction(m: re.Match[str]) -> str:
    num, den = int(m.group(2)), int(m.group(3))
    if not (2 <= den <= 16 and 0 < num < den):
        return m.group(0)
    frac = "a half" if (num, den) == (1, 2) else _fraction_words(num, den)
    return f"{N.cardinal(int(m.group(1)))} and {frac}"


def _range(m: re.Match[str]) -> str:
    a, b = m.group(1), m.group(2)
    both_years = len(a) == len(b) == 4

    def read(s: str) -> str:
        return N.year(int(s)) if both_years else N.cardinal(int(s))

    return f"{read(a)} to {read(b)}"


def _year(m: re.Match[str]) -> str:
    return N.year(int(m.group(1)))


def _dotted_number(m: re.Match[str]) -> str:
    return " dot ".join(N.cardinal(int(g)) if len(g) < 4 else N.digits(g) for g in m.group(0).split("."))


def _version(m: re.Match[str]) -> str:
    return "version " + " point ".join(N.cardinal(int(g)) for g in m.group(1).split("."))


def _decimal(m: re.Match[str]) -> str:
    return N.decimal(m.group(0))


def _integer(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) > 1 and s.startswith("0"):
        return N.digits(s)
    return N.cardinal(int(s))


def _symbol(m: re.Match[str]) -> str:
    return f" {T.SYMBOLS[m.group(0)]} "


def _plural_acronym(m: re.Match[str]) -> str:
    return " ".join(m.group(1)) + "'s"


def _rules() -> list[_Rule]:
    months = _MONTH_RE
    units = _alt(T.UNITS)
    currency_prefix = _alt(T.CURRENCIES)
    scale = r"(hundred|thousand|million|billion|trillion|bn|mn|[kKmMbBtT])\b"
    roman = r"((?=[IVXLCDM])M{0,3}(?:CM|CD|D?C{0,3})(?:XC|XL|L?X{0,3})(?:IX|IV|V?I{0,3}))"
    r: list[tuple[str, Callable[[re.Match[str]], str]] | tuple[str, Callable[[re.Match[str]], str], int]] = [
        (r"(?<![\w~])[~≈]\s?(?=[\d$€£¥.])", lambda m: "about "),
        (r"(?<![\w.+-])([A-Za-z0-9][\w.+-]*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)", _email),
        ((r"(?<![\w@/.-])(?:(?:[a-zA-Z]+://|www\.)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|edu|gov|"
         r"io|ai|co|uk|de|fr|info|dev|app|us|eu|ca|au|me|tv|ly|gl|xyz|jp|nz|biz))(?::\d+)?"
         r"(?:/[^\s]*[^\s.,;:!?)\"'])?/?(?![\w@-])"), _url),
        (r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", _date_iso),
        (r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4}|\d{2})\b(?!/)", _date_slash),
        (rf"\b({months})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?![\d:%])(?:,?\s+(\d{{4}})\b)?", _month_day),
        (rf"\b(the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({months})\b\.?(?:,?\s+(\d{{4}})\b)?", _day_month),
        (r"\b(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s?([AaPp])(?:\.[Mm]\.?|[Mm])(?![\w]))?(?!\d)", _time),
        (r"\b(\d{1,2})\s?([AaPp])(?:\.[Mm]\.?|[Mm])(?![\w])", _hour_ampm),
        (r"(?<![\w.-])\+?(?:(\d{1,3})[\s.-])?\(?(\d{3})\)?[\s.-]?(\d{3})[\s.-](\d{4})(?![\w-])", _phone),
        (r"(?<![\w.-])(?:(1)-)?(\d{3})-(\d{4})(?![\w-])", _phone),
        (rf"(?<![\w.])(-)?({currency_prefix})\s?(\d+(?:,\d{{3}})*(?:\.\d+)?)(?:\s?{scale})?", _money_prefix),
        (rf"(?<![\w.])(-?{_NUM})(?:\s?{scale})?\s?(€|£|¥|₹|USD|EUR|GBP|JPY|INR|CHF)(?!\w)", _money_suffix),
        (r"\b(1[1-9]\d0|20[0-9]0)'?s\b", _decade),
        (r"(?<![\w])['’]?([1-9]0)'?s\b", _short_decade),
        (rf"(?<![\w.])({_NUM})\s?¢", _cents),
        (rf"(?<![\w.])(-?{_NUM})\s?%", _percent),
        (rf"(?<![\w.])(-?{_NUM})\s?°\s?([CFK])?(?![\w])", _degrees),
        (rf"(?<![\w.])(-?{_NUM})\s?({units})(?![\w/²³])", _unit),
        (rf"(?<![\w/])({_alt(T.BARE_UNITS)})(?![\w/])", _bare_unit),
        (rf"\b({_alt(T.TITLES)})\.\s*(?=[A-Z])", _title),
        (rf"\b({_alt(T.TITLES_NO_DOT)})\s+(?=[A-Z][a-z])", _title),
        (r"\b([A-Z][a-z]+)\s+(St|Dr)\.?(?![\w])", _street),
        (r"\b(Mr|Mrs|Ms|Prof)\.", _title),
        (rf"(?<![\w.])({_alt(T.ABBREVIATIONS)})(?![\w])", _abbrev),
        (r"(?<![\w.])(?:[A-Za-z]\.){2,}(?![\w])", _dotted_acronym),
        (r"\b(No|Nos|no)\.\s?(?=\d)", lambda m: "number "),
        (rf"\b({_alt(T.REGNAL_NAMES)})\s+{roman}\b(?![.'’]\w)", _roman_ordinal),
        (rf"\b({_alt(T.ROMAN_CARDINAL_CONTEXT)})\s+{roman}\b(?![.'’]\w)", _roman_cardinal),
        (rf"\b({_alt(T.IDENTIFIER_CONTEXT)})\s+(\d{{3,4}})\b(?![.,]\d)", _identifier, re.IGNORECASE),
        (r"(?<![\w&])#(\d+)\b", _hash_number),
        (r"\b(\d+)(?:st|nd|rd|th)\b", _ordinal),
        (r"\b(\d+)\s+(\d{1,2})/(\d{1,2})\b(?![/\d])", _mixed_fraction),
        (r"(?<![\w./])(\d{1,3})/(\d{1,3})(?![\w/]|\.\d)", _fraction),
        (r"(?<![\w.-])(\d{1,4})\s?[-–]\s?(\d{1,4})(?![\w-]|[.,]\d)", _range),
        (r"(?<![\w.,])(1[1-9]\d\d|20\d\d)(?![\w%]|[.,]\d)", _year),
        (r"\b[vV](\d+(?:\.\d+)+)\b(?!\.\d)", _version),
        (r"(?<![\w.])\d+(?:\.\d+){2,}(?!\w|\.\d)", _dotted_number),
        (r"(?<=\d)\s?[x×]\s?(?=\d)", lambda m: " times "),
        (r"(?<=[A-Za-z])-(?=\d)", lambda m: " "),
        (r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", lambda m: " "),
        (r"(?<![\w.])-?\d+(?:,\d{3})+(?:\.\d+)?(?!\d)|(?<![\w.])-?\d*\.\d+(?!\d)|(?<![\w])-(?=\d+\b)\d+", _decimal),
        (r"\d+", _integer),
        (rf"(?<=[\w\s])({_alt(T.SYMBOLS)})(?=[\w\s])", _symbol),
        (r"\b([A-Z]{2,5})s\b", _plural_acronym),
    ]
    return [(re.compile(p[0], p[2] if len(p) > 2 else 0), p[1]) for p in r]  # type: ignore[misc]


_RULES = _rules()
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_SLASH_WORDS = re.compile(r"(?<=[A-Za-z])/(?=[A-Za-z])")
_DASHES = re.compile(r"\s+[—–]\s+|(?<=\w)—(?=\w)")


def normalize_for_speech(text: str) -> str:
    """English text -> the words to say (numbers, money, dates, units, abbreviations written out)."""
    text = text.replace("\u2044", "/").replace("’", "'")
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    if "/" in text:
        text = _SLASH_WORDS.sub(" or ", text.replace("and/or", "and or"))
    text = _DASHES.sub(", ", text)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(text.split()))
    return text
