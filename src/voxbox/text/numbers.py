"""English number words: cardinals, ordinals, years, decimals, digit-by-digit readings.

Written here rather than taken from ``num2words`` so the TTS front-end has no extra dependency and
its output is fixed by this file alone (no "and" inside numbers, words joined by single spaces,
American usage). Every function returns plain lower-case words with no digits, so an engine's own
number reader never sees a digit it could misread (hibari's G2P fails on integers of 37+ digits).
"""

from __future__ import annotations

__all__ = [
    "MAX_CARDINAL_DIGITS",
    "cardinal",
    "decimal",
    "digits",
    "identifier",
    "number",
    "ordinal",
    "ordinal_word",
    "year",
]

_ONES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS = ("_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = (
    "", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion", "septillion",
    "octillion", "nonillion", "decillion",
)
#: Longer integers are read digit by digit (nobody says "forty decillion ...", and listeners can't follow).
MAX_CARDINAL_DIGITS = 15
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth",
    "twelve": "twelfth",
}
_DIGIT_WORDS = dict(zip("0123456789", _ONES[:10], strict=True))


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens])
        if ones:
            words.append(_ONES[ones])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def cardinal(n: int) -> str:
    """``1249`` -> "one thousand two hundred forty nine"; negative numbers get "minus".

    Integers of more than :data:`MAX_CARDINAL_DIGITS` digits are read digit by digit.
    """
    if n < 0:
        return "minus " + cardinal(-n)
    if n == 0:
        return "zero"
    if len(str(n)) > MAX_CARDINAL_DIGITS:
        return digits(str(n))
    groups: list[int] = []
    while n:
        n, g = divmod(n, 1000)
        groups.append(g)
    words: list[str] = []
    for i in range(len(groups) - 1, -1, -1):
        if groups[i]:
            words += _below_thousand(groups[i])
            if _SCALES[i]:
                words.append(_SCALES[i])
    return " ".join(words)


def ordinal_word(words: str) -> str:
    """Turn the last word of a cardinal into its ordinal ("twenty one" -> "twenty first")."""
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}" if head else last


def ordinal(n: int) -> str:
    """``22`` -> "twenty second"."""
    return ordinal_word(cardinal(n))


def digits(s: str, zero: str = "zero") -> str:
    """Digit by digit: ``"0123"`` -> "zero one two three" (``zero="oh"`` for phone numbers)."""
    return " ".join(zero if ch == "0" else _DIGIT_WORDS[ch] for ch in s if ch in _DIGIT_WORDS)


def _pair(n: int) -> str:
    """Two-digit group as said in years and identifiers: 5 -> "oh five", 76 -> "seventy six"."""
    return "oh " + _ONES[n] if n < 10 else cardinal(n)


def year(n: int) -> str:
    """``1776`` -> "seventeen seventy six", ``1905`` -> "nineteen oh five", ``1900`` -> "nineteen
    hundred", ``2008`` -> "two thousand eight", ``2024`` -> "twenty twenty four"."""
    if not 1000 <= n <= 9999 or (2000 <= n <= 2009) or n % 1000 == 0:
        return cardinal(n)
    hi, lo = divmod(n, 100)
    if lo == 0:
        return cardinal(hi) + " hundred"
    return f"{cardinal(hi)} {_pair(lo)}"


def identifier(s: str) -> str:
    """Numbers used as names (error codes, rooms, flights): ``404`` -> "four oh four", ``747`` ->
    "seven forty seven", ``500`` -> "five hundred", ``1234`` -> "twelve thirty four"; longer ones
    and ones with leading zeros digit by digit."""
    if len(s) > 4 or (len(s) > 1 and s.startswith("0")):
        return digits(s, zero="oh")
    if len(s) < 3:
        return cardinal(int(s))
    n = int(s)
    if len(s) == 3:
        hi, lo = divmod(n, 100)
        return cardinal(n) if lo == 0 else f"{_ONES[hi]} {_pair(lo)}"
    return year(n)


def decimal(s: str) -> str:
    """``"3.14"`` -> "three point one four"; ``"1,250"`` -> "one thousand two hundred fifty";
    a leading ``-`` reads "minus"."""
    neg = s.startswith("-")
    s = s.lstrip("-").replace(",", "")
    whole, _, frac = s.partition(".")
    words = cardinal(int(whole)) if whole else "zero"
    if frac:
        words += " point " + digits(frac)
    return ("minus " + words) if neg else words


def number(s: str) -> str:
    """Any plain numeral string (digits, optional thousands commas, optional decimals)."""
    return decimal(s)
