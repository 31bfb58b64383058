"""Word tables of the English TTS front-end (``voxbox.text.normalize``): data, no logic."""

from __future__ import annotations

#: Month names by number and by the abbreviations people write.
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
MONTH_ABBREV = {m[:3].lower(): m for m in MONTHS} | {"sept": "September"}

#: Titles, expanded only before a capitalised word ("Dr. Smith", "St. Louis").
TITLES = {
    "Dr": "Doctor", "Mr": "Mister", "Mrs": "Missus", "Ms": "Miz", "Prof": "Professor", "St": "Saint",
    "Mt": "Mount", "Ft": "Fort", "Gen": "General", "Gov": "Governor", "Sen": "Senator", "Rep": "Representative",
    "Capt": "Captain", "Lt": "Lieutenant", "Col": "Colonel", "Sgt": "Sergeant", "Rev": "Reverend",
    "Hon": "Honorable", "Pres": "President", "Fr": "Father", "Supt": "Superintendent", "Cmdr": "Commander",
}
#: Titles that are also written without a period ("Dr Smith", British style).
TITLES_NO_DOT = ("Dr", "Mr", "Mrs", "Ms", "Prof", "St", "Mt")
#: The same abbreviations after a name ("Main St.", "Mulholland Dr.").
STREET = {"St": "Street", "Dr": "Drive"}

#: Abbreviations written with a final period, expanded wherever they stand.
ABBREVIATIONS = {
    "Jr.": "Junior", "Sr.": "Senior", "Ave.": "Avenue", "Blvd.": "Boulevard", "Rd.": "Road", "Ln.": "Lane",
    "Hwy.": "Highway", "Apt.": "Apartment", "Ste.": "Suite", "Bldg.": "Building", "Inc.": "Incorporated",
    "Ltd.": "Limited", "Corp.": "Corporation", "Co.": "Company", "Bros.": "Brothers", "Dept.": "Department",
    "Univ.": "University", "Assn.": "Association", "Govt.": "Government", "approx.": "approximately",
    "vs.": "versus", "vs": "versus", "etc.": "et cetera", "e.g.": "for example", "i.e.": "that is",
    "a.k.a.": "also known as", "Fig.": "Figure", "fig.": "figure", "Vol.": "Volume", "vol.": "volume",
    "Ch.": "Chapter", "ch.": "chapter", "pp.": "pages", "p.": "page", "est.": "established", "Mon.": "Monday",
    "Tue.": "Tuesday", "Tues.": "Tuesday", "Wed.": "Wednesday", "Thu.": "Thursday", "Thurs.": "Thursday",
    "Fri.": "Friday", "Sat.": "Saturday", "Sun.": "Sunday", "Mins.": "minutes", "min.": "minutes",
    "hrs.": "hours", "yrs.": "years", "ft.": "feet", "oz.": "ounces", "lbs.": "pounds", "lb.": "pound",
}

#: Unit symbols after a number: (singular, plural). Case-sensitive keys.
UNITS: dict[str, tuple[str, str]] = {
    "km/h": ("kilometer per hour", "kilometers per hour"), "kph": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"), "m/s": ("meter per second", "meters per second"),
    "km²": ("square kilometer", "square kilometers"), "km2": ("square kilometer", "square kilometers"),
    "m²": ("square meter", "square meters"), "m2": ("square meter", "square meters"),
    "m³": ("cubic meter", "cubic meters"), "m3": ("cubic meter", "cubic meters"),
    "km": ("kilometer", "kilometers"), "cm": ("centimeter", "centimeters"), "mm": ("millimeter", "millimeters"),
    "m": ("meter", "meters"), "mi": ("mile", "miles"), "ft": ("foot", "feet"), "yd": ("yard", "yards"),
    "kg": ("kilogram", "kilograms"), "mg": ("milligram", "milligrams"), "g": ("gram", "grams"),
    "lb": ("pound", "pounds"), "lbs": ("pound", "pounds"), "oz": ("ounce", "ounces"),
    "ml": ("milliliter", "milliliters"), "mL": ("milliliter", "milliliters"), "l": ("liter", "liters"),
    "L": ("liter", "liters"),
    "TB": ("terabyte", "terabytes"), "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
    "KB": ("kilobyte", "kilobytes"), "kB": ("kilobyte", "kilobytes"),
    "Gbps": ("gigabit per second", "gigabits per second"), "Mbps": ("megabit per second", "megabits per second"),
    "GHz": ("gigahertz", "gigahertz"), "MHz": ("megahertz", "megahertz"), "kHz": ("kilohertz", "kilohertz"),
    "Hz": ("hertz", "hertz"), "kWh": ("kilowatt hour", "kilowatt hours"), "kW": ("kilowatt", "kilowatts"),
    "W": ("watt", "watts"), "V": ("volt", "volts"), "mAh": ("milliamp hour", "milliamp hours"),
    "ms": ("millisecond", "milliseconds"), "sec": ("second", "seconds"), "s": ("second", "seconds"),
    "min": ("minute", "minutes"), "hr": ("hour", "hours"), "hrs": ("hour", "hours"), "h": ("hour", "hours"),
    "dB": ("decibel", "decibels"), "°": ("degree", "degrees"),
}
#: Units also expanded when they stand without a number ("speed in km/h").
BARE_UNITS = ("km/h", "kph", "mph", "km", "cm", "mm", "kg", "mg", "kWh", "GHz", "MHz", "kHz", "mAh", "Gbps",
              "Mbps")

#: Currency symbol or code -> (one, many, minor one, minor many); minor "" = none.
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "$": ("dollar", "dollars", "cent", "cents"), "US$": ("US dollar", "US dollars", "cent", "cents"),
    "USD": ("US dollar", "US dollars", "cent", "cents"), "€": ("euro", "euros", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
    "GBP": ("pound", "pounds", "penny", "pence"), "¥": ("yen", "yen", "", ""), "JPY": ("yen", "yen", "", ""),
    "₹": ("rupee", "rupees", "paisa", "paise"), "INR": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", "", ""), "CHF": ("Swiss franc", "Swiss francs", "centime", "centimes"),
}
SCALE_WORDS = {"k": "thousand", "K": "thousand", "m": "million", "M": "million", "mn": "million",
               "b": "billion", "B": "billion", "bn": "billion", "t": "trillion", "T": "trillion"}

#: Denominators of spoken fractions: (singular, plural).
FRACTIONS = {2: ("half", "halves"), 3: ("third", "thirds"), 4: ("quarter", "quarters")}

#: Words after which a 3-4 digit number is a name, said in groups ("error 404" -> "four oh four").
IDENTIFIER_CONTEXT = ("error", "code", "status", "http", "room", "flight", "gate", "platform", "route", "channel",
                      "extension", "ext", "port", "suite", "apartment", "apt", "bus", "model", "number", "no",
                      "line", "highway", "interstate", "track", "pin", "area")

#: Top-level domains said letter by letter (the rest are said as words: "dot com", "dot org").
SPELLED_TLDS = frozenset((
    "io", "ai", "uk", "us", "tv", "fm", "eu", "jp", "cn", "ru", "nl", "de", "fr", "ca", "au", "ly", "gl", "me",
    "nz", "za", "in", "it", "es", "se", "no", "dk", "fi", "pl", "br", "mx", "ch", "at", "be", "kr", "hk", "sg",
    "tw",
))

#: Symbols spoken as words when they stand between words or numbers.
SYMBOLS = {"&": "and", "+": "plus", "=": "equals", "×": "times", "@": "at", "~": "about", "±": "plus or minus",
           "≈": "approximately", "≤": "less than or equal to", "≥": "greater than or equal to", "<": "less than",
           ">": "greater than"}

#: Roman numerals after these words are ordinals ("Henry VIII" -> "Henry the eighth") ...
REGNAL_NAMES = ("Henry", "Louis", "George", "Elizabeth", "Edward", "Charles", "James", "William", "Richard",
                "John", "Mary", "Philip", "Benedict", "Gregory", "Leo", "Pius", "Paul", "Peter", "Catherine",
                "Frederick", "Napoleon", "Ramesses", "Alexander", "Nicholas", "Victor", "Constantine")
#: ... and cardinals after these ("World War II" -> "World War two").
ROMAN_CARDINAL_CONTEXT = ("War", "Chapter", "Part", "Volume", "Act", "Phase", "Book", "Section", "Article",
                          "Super Bowl", "Apollo", "Type", "Class", "Level", "Stage", "Round", "Episode", "Season")
