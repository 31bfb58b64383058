"""The English TTS front-end (voxbox.text.normalize): input -> the exact words handed to the engines."""

from __future__ import annotations

import pytest

from voxbox.text import normalize_for_speech
from voxbox.text import numbers as N

CASES = [
    # money (issue #22 item 14 first)
    ("$1,249.99", "one thousand two hundred forty nine dollars and ninety nine cents"),
    ("$300", "three hundred dollars"),
    ("€15", "fifteen euros"),
    ("$1", "one dollar"),
    ("$0.99", "ninety nine cents"),
    ("$5.00", "five dollars"),
    ("$2.5 million", "two point five million dollars"),
    ("$5k", "five thousand dollars"),
    ("¥100", "one hundred yen"),
    ("£1.01", "one pound and one penny"),
    ("15 €", "fifteen euros"),
    ("50¢", "fifty cents"),
    ("-$5", "minus five dollars"),
    # numbers
    ("42", "forty two"),
    ("1,000,000", "one million"),
    ("0", "zero"),
    ("-7", "minus seven"),
    ("3.14", "three point one four"),
    (".5", "zero point five"),
    ("007", "zero zero seven"),
    ("9" * 40, " ".join(["nine"] * 40)),
    ("192.168.0.1", "one hundred ninety two dot one hundred sixty eight dot zero dot one"),
    ("v2.1.3", "version two point one point three"),
    ("7 x 3", "seven times three"),
    ("~5 km", "about five kilometers"),
    # ordinals
    ("1st", "first"),
    ("2nd", "second"),
    ("3rd", "third"),
    ("12th", "twelfth"),
    ("22nd", "twenty second"),
    ("101st", "one hundred first"),
    # years and decades
    ("in 1776", "in seventeen seventy six"),
    ("2008", "two thousand eight"),
    ("2024", "twenty twenty four"),
    ("1900", "nineteen hundred"),
    ("1905", "nineteen oh five"),
    ("1990s", "nineteen nineties"),
    ("the '80s", "the eighties"),
    ("the 2010s", "the twenty tens"),
    ("1990-1995", "nineteen ninety to nineteen ninety five"),
    # fractions and ranges
    ("3/4", "three quarters"),
    ("1/2", "one half"),
    ("2/3", "two thirds"),
    ("5/8", "five eighths"),
    ("1 1/2", "one and a half"),
    ("24/7", "twenty four seven"),
    ("7/32", "seven over thirty two"),
    ("10-20", "ten to twenty"),
    ("pages 5–7", "pages five to seven"),
    # times
    ("3:30", "three thirty"),
    ("3:05", "three oh five"),
    ("3:00", "three o'clock"),
    ("15:00", "fifteen hundred"),
    ("at 11:45 p.m. sharp", "at eleven forty five P M sharp"),
    ("It ends at 11:45 p.m.", "It ends at eleven forty five P M."),
    ("10am", "ten A M"),
    ("7 PM", "seven P M"),
    # dates
    ("July 4, 1776", "July fourth, seventeen seventy six"),
    ("Jan. 5", "January fifth"),
    ("4 July 2024", "the fourth of July, twenty twenty four"),
    ("the 4th of July", "the fourth of July"),
    ("2024-03-15", "March fifteenth, twenty twenty four"),
    ("12/25/1990", "December twenty fifth, nineteen ninety"),
    # phone numbers and identifiers
    ("555-0123", "five five five, oh one two three"),
    ("(555) 123-4567", "five five five, one two three, four five six seven"),
    ("+1 800 555 0199", "plus one, eight oh oh, five five five, oh one nine nine"),
    ("1-800-555-0199", "one, eight oh oh, five five five, oh one nine nine"),
    ("error 404", "error four oh four"),
    ("room 101", "room one oh one"),
    ("flight 747", "flight seven forty seven"),
    ("HTTP 500", "HTTP five hundred"),
    ("#1", "number one"),
    ("No. 5", "number five"),
    # units
    ("5 km", "five kilometers"),
    ("1 km", "one kilometer"),
    ("in km", "in kilometers"),
    ("1.5 kg", "one point five kilograms"),
    ("60 mph", "sixty miles per hour"),
    ("100 km/h", "one hundred kilometers per hour"),
    ("6 ft", "six feet"),
    ("5 GB", "five gigabytes"),
    ("2.4 GHz", "two point four gigahertz"),
    ("500 ms", "five hundred milliseconds"),
    ("20°C", "twenty degrees Celsius"),
    ("-5°F", "minus five degrees Fahrenheit"),
    ("90°", "ninety degrees"),
    ("50%", "fifty percent"),
    ("3.5%", "three point five percent"),
    # titles and abbreviations
    ("Dr. Smith", "Doctor Smith"),
    ("Mr. Jones", "Mister Jones"),
    ("Mr. and Mrs. Brown", "Mister and Missus Brown"),
    ("Prof. Lee", "Professor Lee"),
    ("St. Louis", "Saint Louis"),
    ("Elm St. is", "Elm Street is"),
    ("Mulholland Dr. is", "Mulholland Drive is"),
    ("Apple Inc. is", "Apple Incorporated is"),
    ("e.g. apples", "for example apples"),
    ("i.e. pears", "that is pears"),
    ("vs. them", "versus them"),
    # acronyms, Roman numerals
    ("the U.S. Army", "the US Army"),
    ("FBI", "FBI"),
    ("APIs", "A P I's"),
    ("COVID-19", "COVID nineteen"),
    ("World War II", "World War two"),
    ("Henry VIII", "Henry the eighth"),
    ("Chapter IV", "Chapter four"),
    # URLs and e-mail
    ("example.org", "example dot org"),
    ("www.example.org", "W W W dot example dot org"),
    ("info@example.com", "info at example dot com"),
    ("john.doe@mail.example.co.uk", "john dot doe at mail dot example dot co dot U K"),
    ("https://docs.python.org/3/", "docs dot python dot org slash three"),
    # symbols
    ("A & B", "A and B"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("and/or", "and or"),
    ("yes/no", "yes or no"),
    # whole sentences from issue #22
    (
        "Dr. Alice Nguyen moved to St. Louis in 1776.",
        "Doctor Alice Nguyen moved to Saint Louis in seventeen seventy six.",
    ),
    ("Visit www.example.org.", "Visit W W W dot example dot org."),
]


def test_table_is_large() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("text, spoken", CASES, ids=[c[0][:30] for c in CASES])
def test_spoken_form(text: str, spoken: str) -> None:
    assert normalize_for_speech(text) == spoken


def test_no_digits_left_and_prose_untouched() -> None:
    prose = "The quick brown fox, who was tired, jumps over the lazy dog!"
    assert normalize_for_speech(prose) == prose
    mixed = "In 2024, 1,250 people paid $3.50 at 5:15 p.m. on 3/4/2024 for 2.5 kg (50%) at No. 7."
    out = normalize_for_speech(mixed)
    assert not any(ch.isdigit() for ch in out), out


def test_number_words() -> None:
    assert N.cardinal(0) == "zero"
    assert N.cardinal(1_000_001) == "one million one"
    assert N.cardinal(999_999_999_999_999) .startswith("nine hundred ninety nine trillion")
    assert N.cardinal(10 ** 15) == "one zero zero zero zero zero zero zero zero zero zero zero zero zero zero zero"
    assert N.ordinal(20) == "twentieth" and N.ordinal(1000) == "one thousandth"
    assert N.year(1776) == "seventeen seventy six" and N.year(2000) == "two thousand"


def test_deterministic() -> None:
    text = "Dr. Lee paid $1,249.99 on 7/4/2024 at 3:30 p.m. for 2.5 kg; see www.example.org or call 555-0123."
    first = normalize_for_speech(text)
    assert all(normalize_for_speech(text) == first for _ in range(20))
