"""Finding identifiers in clinical text: the patterns, and how overlapping matches resolve.

pipeline/privacy.py replaces what ``matches`` and ``resolve`` find; its docstring says what is detected and
what is missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

from text.scan import TEXT_PREFILTERS, Needles, Prefilter, fold, windows

# --- building blocks ------------------------------------------------------------------------------------

# Capitalised words that follow a label or title without being a name ("Patient: Presents with ...").
_STOP_WORDS = (
    "The|This|That|These|Those|He|She|His|Her|They|Their|It|We|You|Your|My|Our|An?|And|Or|But|With|Without|"
    "Is|Was|Has|Had|Have|Will|Not|No|None|Yes|Unknown|Patient|Pt|Name|Presents|Presented|Reports|Reported|"
    "Denies|Admitted|Discharged|History|Summary|Note|Notes|Chief|Complaint|Assessment|Plan|Consent|Team|"
    "Department|Dept|Clinic|Hospital|Ward|Service|Emergency|Today|Yesterday|Tomorrow|Male|Female"
)
# Endings of generic drug names ("Metformin", "Lisinopril", "Apixaban"): a capitalised drug after a name
# ("Dr Smith Metformin") must not become part of it, or every "Metformin" in the sample would be replaced.
_DRUG_ENDINGS = (
    "formin|pril|sartan|olol|statin|azole|cillin|mycin|floxacin|dipine|tidine|parin|xaban|gliptin|gliflozin|"
    "glutide|azepam|oxetine|triptan|vir|cycline|sone|olone|mab|nib|profen|amide|afil|lukast"
)
# One capitalised name word: "Roe", "McDonald", "O'Brien", "Smith-Jones"; never "Smith's" (stops before 's).
_TOKEN = (
    rf"(?!(?:{_STOP_WORDS})\b)(?![A-Z][a-z]*(?:{_DRUG_ENDINGS})\b)"
    r"(?:[A-Z][a-z]+(?:[A-Z][a-z]+)?|[A-Z]'[A-Z][a-z]+)(?:-[A-Z][a-z]+)*\b"
)
_INITIAL = r"[A-Z]\."
# After a title: first name and last name at most ("Dr. J. Smith", "Mrs Jane Roe"), so that the capitalised
# word after the name ("Dr Smith Metformin") is less often swallowed.
_SHORT_NAME = rf"(?:{_INITIAL}[ \t]*)?{_TOKEN}(?:[ \t]+(?:{_INITIAL}[ \t]+)?{_TOKEN})?"
# After a label: up to three words ("Patient: Mary Ann Roe").
_LONG_NAME = rf"(?:{_INITIAL}[ \t]*)?{_TOKEN}(?:[ \t]+(?:{_INITIAL}[ \t]+)?{_TOKEN}){{0,2}}"
_TITLE = r"(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Professor|Doctor)\b\.?"

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|"
    r"Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b\.?"
)
_DAY = r"(?:0?[1-9]|[12]\d|3[01])(?:st|nd|rd|th)?\b"
_YEAR = r"(?:19|20)\d{2}\b"
_DAY_OR_MONTH = r"(?:0?[1-9]|[12]\d|3[01])"
# What follows a number that is a dose or a lab value, not part of an identifier ("250 500 1000 mg").
_NOT_UNIT = r"(?![ \t]*(?:(?:mg|mcg|ug|g|kg|ml|mL|L|l|units?|IU|mmol|mEq|tabs?|tablets?|caps?)\b|%))"

_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|"
    "OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_CITY_STATE_ZIP = rf"[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+){{0,2}},?[ \t]+(?:{_STATES})(?:[ \t]+\d{{5}}(?:-\d{{4}})?)?\b"
_STREET_WORDS = (
    "Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Blvd", "Lane", "Ln", "Drive", "Dr", "Court", "Ct",
    "Place", "Pl", "Way", "Terrace", "Ter", "Circle", "Cir", "Parkway", "Pkwy", "Highway", "Hwy", "Square", "Sq",
)  # fmt: skip
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|"
    r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq)\b\.?"
)
# A period inside a labelled address that does not end it: street abbreviations ("12 Oak St., Springfield").
_ADDRESS_DOT = r"(?:(?<=\bSt)|(?<=\bDr)|(?<=\bRd)|(?<=\bLn)|(?<=\bCt)|(?<=\bAve)|(?<=\bApt)|(?<=\bSte)|(?<=\bBlvd))\."


class Cluster(NamedTuple):
    """Digits with the separators a phone number, date or address puts between them ("(555) 123-4567"), and
    what the patterns gated on clusters ask of them."""

    start: int
    end: int
    digits: int
    dated: bool  # a date separator ("/", ".", "-") between digits
    dots: int
    aged: bool  # a number of 2 or 3 digits from 90 to 149 (an age the AGE pattern aggregates)


def clusters(text: str) -> list[Cluster]:
    """The digit clusters of ``text``: runs of digits joined by nothing but separators (`` ().+/:-``)."""
    found: list[Cluster] = []
    runs = _digit_runs(text)
    first = 0
    for index, (start, end) in enumerate(runs):
        if index + 1 < len(runs) and _SEPARATORS.issuperset(text[end : runs[index + 1][0]]):
            continue  # the next run belongs to this cluster
        if first == index:  # one run, as most are: a count, a dose, an age
            aged = 2 <= end - start <= 3 and 90 <= int(text[start:end]) <= 149
            found.append(Cluster(start, end, end - start, False, 0, aged))
        else:
            group, start = runs[first : index + 1], runs[first][0]
            between = text[start:end]
            aged = any(2 <= e - s <= 3 and 90 <= int(text[s:e]) <= 149 for s, e in group)
            dated = "/" in between or "." in between or "-" in between
            found.append(Cluster(start, end, sum(e - s for s, e in group), dated, between.count("."), aged))
        first = index + 1
    return found


def _digit_runs(text: str) -> list[tuple[int, int]]:
    if not text.isascii():
        return [m.span() for m in _RUNS.finditer(text)]
    digits = text.encode().translate(_DIGIT_BYTES)  # every digit "0", anything else " ": C-speed finds
    runs = []
    start = digits.find(b"0")
    while start >= 0:
        end = digits.find(b" ", start)
        end = len(digits) if end < 0 else end
        runs.append((start, end))
        start = digits.find(b"0", end)
    return runs


_SEPARATORS = frozenset(" ().+/:-")
_DIGIT_BYTES = bytes(ord("0") if chr(code) in "0123456789" else ord(" ") for code in range(256))


# Where a pattern runs. A regex pass costs up to a tenth of a microsecond a character, and a clinical answer
# holds a few identifiers at most: each pattern names what every match of it holds, and runs only near that.
# A pattern with none of these runs on the whole text.
class Need(NamedTuple):
    """What a digit cluster must have for a pattern to match in it."""

    digits: int = 0
    dated: bool = False
    dots: int = 0
    aged: bool = False

    def admits(self, c: Cluster) -> bool:
        enough = c.digits >= self.digits and c.dots >= self.dots
        return enough and (c.dated or not self.dated) and (c.aged or not self.aged)


class _Pattern(NamedTuple):
    kind: str  # the placeholder type
    regex: re.Pattern[str]  # the identifier is group "v" when the regex has one, else the whole match
    check: Callable[[str], bool] | None = None  # a further test of the matched value
    # A rare string: the regex runs on the whole text, and only when its lower-case form holds one of them.
    needles: tuple[str, ...] = ()
    # Or: word beginnings (text.scan.Needles: lower case in the folded text, others as written); with
    # ``anchored`` every match starts at one, and the regex is only tried there; with ``reach`` None, it runs
    # on the whole text when one is there ...
    words: tuple[str, ...] = ()
    anchored: bool = False
    # ... or the digit clusters it can match in (matches() finds them once) ...
    cluster: Need | None = None
    # ... and the regex runs from reach[0] characters before each to reach[1] after it (a cluster: its end).
    reach: tuple[int, int] | None = (0, 0)
    needs_digit: bool = False  # every match holds a digit: not run on text without one
    gate: Callable[[str], bool] | None = None  # or: runs on the whole text when this holds for the folded text


def _digits(value: str) -> int:
    return sum(ch.isdigit() for ch in value)


def _phone_digits(value: str) -> bool:
    return 8 <= _digits(value) <= 15


def _labelled_phone_digits(value: str) -> bool:
    return 5 <= _digits(value) <= 15


def _has_digit(value: str) -> bool:
    return _digits(value) > 0


# Already-placed placeholders ("[NAME_1]", "[AGE_90+]"): never detected again, and their numbers are reserved.
PLACEHOLDER = re.compile(r"\[(?P<kind>[A-Z]+)_(?:(?P<n>\d+)|90\+)\]")

# Most patterns open with a lookahead on their first character: the engine then rejects most positions with
# one cheap test instead of trying every branch there (two to four times faster on clinical text).
_PATTERNS: tuple[_Pattern, ...] = (
    # "jane.roe@example.org"
    _Pattern(
        "EMAIL",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        needles=("@",),
    ),
    # "https://portal.example.org/p/123", "www.example.org"
    _Pattern(
        "URL",
        re.compile(r"(?=[hHfFwW])\b(?i:(?:https?|ftp)://|www\.)[^\s<>\"'\[\]]+"),
        words=("http", "https", "ftp", "www"),
        reach=None,
    ),
    # "SSN: 123-45-6789", "social security number 123456789"
    _Pattern(
        "SSN",
        re.compile(
            r"(?=[sS])\b(?i:SSN|social[ \t]+security(?:[ \t]+(?:number|no\b\.?|\#))?)[ \t]*(?:is[ \t]+)?[:#]?[ \t]*"
            r"(?P<v>\d{3}[ -]?\d{2}[ -]?\d{4})\b"
        ),
        words=("ssn", "social"),
        reach=None,
    ),
    # bare "123-45-6789"
    _Pattern("SSN", re.compile(r"(?=\d)(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), cluster=Need(digits=9)),
    # "MRN: 00123456", "MR# A12345", "medical record number 987654", "Patient ID: P-12345"
    _Pattern(
        "MRN",
        re.compile(
            r"(?=[mMrRpP])\b(?i:MRN|MR[ \t]*\#|MR[ \t]+no\b\.?|(?:medical[ \t]+)?record[ \t]+(?:number|no\b\.?|\#)"
            r"|(?:patient|pt)[ \t]+(?:id|identifier|number|no\b\.?))"
            r"[ \t]*(?:is[ \t]+)?[:#]?[ \t]*(?P<v>[A-Za-z0-9][A-Za-z0-9-]{3,})"
        ),
        _has_digit,
        words=("mrn", "mr", "medical", "record", "patient", "pt"),
        anchored=True,
        needs_digit=True,
    ),
    # "Account #: 55512", "encounter 889900", "NPI 1234567893", "DEA number AB1234563", "member ID XZ-99812"
    _Pattern(
        "ID",
        re.compile(
            r"(?=[aAeEvVcCfFnNdDiImMsSpP])"
            r"\b(?i:(?:acct|account|encounter|visit|CSN|FIN|NPI|DEA|insurance|member|subscriber|policy|claim)"
            r"(?:[ \t]+(?:id|identifier|number|no\b\.?|\#))?)"
            r"[ \t]*(?:is[ \t]+)?[:#]?[ \t]*(?P<v>[A-Za-z0-9][A-Za-z0-9-]{3,})"
        ),
        _has_digit,
        words=(
            "acct",
            "account",
            "encounter",
            "visit",
            "csn",
            "fin",
            "npi",
            "dea",
            "insurance",
            "member",
            "subscriber",
            "policy",
            "claim",
        ),
        anchored=True,
        needs_digit=True,
    ),
    # "1/2/2024", "02.01.2024", "2024-01-02", "03/2024"; not "7.4", "120/80", "1/2 tablet", "4.18/10" (one
    # separator in a date)
    _Pattern(
        "DATE",
        re.compile(
            rf"(?=\d)(?<![\w/.-])(?:{_DAY_OR_MONTH}(?P<sep>[/.-]){_DAY_OR_MONTH}(?P=sep)(?:(?:19|20)\d{{2}}|\d{{2}})"
            rf"|(?:19|20)\d{{2}}[/.-](?:0?[1-9]|1[0-2])[/.-]{_DAY_OR_MONTH}"
            rf"|(?:0?[1-9]|1[0-2])/(?:19|20)\d{{2}})(?![\w/-]|\.\d)"
        ),
        cluster=Need(dated=True),
    ),
    # "Jan 2, 2024", "January 2nd 2024", "March 3", "2 January 2024", "3rd of March", "January 2024";
    # not "3 days", "for 2 weeks", "65-year-old" (no month name)
    _Pattern(
        "DATE",
        re.compile(
            rf"(?=[\dJFMASOND])\b(?:{_MONTH}[ \t]+{_DAY}(?:,?[ \t]+{_YEAR})?{_NOT_UNIT}"
            rf"|{_DAY}[ \t]+(?:of[ \t]+)?{_MONTH}(?:,?[ \t]+{_YEAR})?"
            rf"|{_MONTH}[ \t,-]+{_YEAR})"
        ),
        words=("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        reach=(16, 40),
        needs_digit=True,
    ),
    # "DOB: 01021950", "D.O.B. 1950-01-02", "date of birth 1950" (forms the date patterns above leave out)
    _Pattern(
        "DATE",
        re.compile(
            r"(?=[dDbB])\b(?i:DOB\b|D\.O\.B\b\.?|date[ \t]+of[ \t]+birth\b|birth[ \t]*date\b|born(?:[ \t]+on)?\b)"
            r"[ \t]*[:#-]?[ \t]*(?P<v>\d{1,4}[/.-]\d{1,2}(?:[/.-]\d{2,4})?|\d{6,8}|(?:19|20)\d{2})\b"
        ),
        words=("dob", "d.o.b", "date", "birth", "born"),
        anchored=True,
        needs_digit=True,
    ),
    # US: "(555) 123-4567", "555.123.4567", "+1 555 123 4567", "5551234567", "1-800-555-0199", "555-123-4567 x204";
    # spaces alone only with "(555)" or "+1", so that "platelets 150 250 1000" is not a phone; not "40 mg", "7.4"
    _Pattern(
        "PHONE",
        re.compile(
            r"(?=[\d(+])(?<![\w+])(?:(?:\+?1[ .-]?)?\(\d{3}\)[ .-]?\d{3}[ .-]?|\+1[ .-]?\d{3}[ .-]?\d{3}[ .-]?"
            r"|(?:1[.-]?)?\d{3}[.-]?\d{3}[.-]?)\d{4}"
            rf"(?:[ \t]?(?:x|ext\.?)[ \t]?\d{{1,5}})?(?!\w){_NOT_UNIT}"
        ),
        cluster=Need(digits=10),
        reach=(2, 12),
    ),
    # International and national trunk formats: "+44 20 7946 0958", "+44 (0)20 7946 0958", "0049 30 1234567",
    # "020 7946 0958", "01 23 45 67 89"; 8 to 15 digits
    _Pattern(
        "PHONE",
        re.compile(
            r"(?=[+0])(?<![\w+])(?:(?:\+|\b00)[1-9]\d{0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\(?\d{1,5}\)?[ .-]?){1,5}\d{2,5}"
            rf"|\b0\d{{1,4}}[ .-]\d{{2,4}}(?:[ .-]\d{{2,4}}){{1,3}})(?![\w.]\d|\w){_NOT_UNIT}"
        ),
        _phone_digits,
        cluster=Need(digits=8),
        reach=(2, 2),
    ),
    # "Phone: 555-1234", "fax 555 1234 ext 12", "Tel. (0)20 7946 0958", "call back at 5551234"
    _Pattern(
        "PHONE",
        re.compile(
            r"(?=[pPtTcCmMfFbB])\b(?i:(?:phone|telephone|tel|cell|mobile|fax|pager|beeper|call(?:[ \t]+back)?"
            r"(?:[ \t]+at)?)\b\.?(?:[ \t]*(?:no\b\.?|number|\#))?)[ \t]*[:#]?[ \t]*(?P<v>\+?\(?\d[\d ().-]{3,}\d)(?!\w)"
        ),
        _labelled_phone_digits,
        words=("phone", "telephone", "tel", "cell", "mobile", "fax", "pager", "beeper", "call"),
        anchored=True,
        needs_digit=True,
    ),
    # "221B Baker Street", "12 Oak St., Apt 4, Springfield, IL 62704", "1600 Pennsylvania Ave NW"
    _Pattern(
        "ADDRESS",
        re.compile(
            r"(?=\d)\b\d{1,6}[A-Za-z]?(?:[ \t]+(?:[NSEW]\.?|North|South|East|West))?"
            rf"(?:[ \t]+(?:[A-Z][A-Za-z'.-]*|\d{{1,3}}(?:st|nd|rd|th))){{1,4}}[ \t]+{_STREET_SUFFIX}"
            r"(?:[ \t]+(?:NE|NW|SE|SW|N|S|E|W)\b)?"
            r"(?:,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Room|Rm|\#)\.?[ \t]*\#?[\w-]+)?"
            rf"(?:,[ \t]*{_CITY_STATE_ZIP})?"
        ),
        words=_STREET_WORDS,
        reach=(200, 40),
        needs_digit=True,
    ),
    # "Springfield, IL 62704", "Boston MA 02115-1234": a US ZIP after a state code (with the city before it)
    _Pattern(
        "ADDRESS",
        re.compile(
            rf"(?=[A-Z])\b(?:[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+){{0,2}},?[ \t]+)?(?:{_STATES})[ \t]+\d{{5}}(?:-\d{{4}})?\b"
        ),
        cluster=Need(digits=5),
        reach=(120, 2),
    ),
    # "Address: 4 Rue de la Paix, Paris" (to the end of the line, a ";" or a sentence-ending period)
    _Pattern(
        "ADDRESS",
        re.compile(
            r"(?=[hHmMsSpPaA])\b(?i:(?:home[ \t]+|mailing[ \t]+|street[ \t]+|postal[ \t]+)?address\b)[ \t]*[:-][ \t]*"
            rf"(?P<v>[A-Za-z0-9](?:[^\n;.\[]|\.(?=\S)|{_ADDRESS_DOT}){{1,120}})"
        ),
        words=("address",),
        reach=None,
    ),
    # "192.168.1.20"; not "7.4" or "1.2.3"
    _Pattern(
        "IP",
        re.compile(r"(?=\d)(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w]|\.\d)"),
        cluster=Need(dots=3),
    ),
    # "fe80::1", "2001:0db8:0000:0000:0000:ff00:0042:8329"; not "12:30"
    _Pattern(
        "IP",
        re.compile(
            r"(?=[0-9A-Fa-f])(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?)(?![\w:])"
        ),
        gate=lambda folded: "::" in folded or folded.count(":") >= 7,
    ),
    # "a 92-year-old", "95 y/o", "101 years old", "93 yo"; not "65-year-old"
    _Pattern(
        "AGE",
        re.compile(
            r"(?=[19])(?<![\w.])(?P<v>9\d|1[0-4]\d)(?=[- \t]?(?:years?|yrs?)[- \t]old\b|[- \t]?(?:y/o|yo)\b"
            r"|[- \t]?y\.o\b|[- \t]?(?:years?|yrs?)[ \t]+of[ \t]+age\b)"
        ),
        cluster=Need(aged=True),
        reach=(0, 30),
    ),
    # "aged 94", "Age: 91"; not "aged 65"
    _Pattern(
        "AGE",
        re.compile(r"(?=[aA])\b(?i:aged?)\b[ \t]*[:=]?[ \t]*(?P<v>9\d|1[0-4]\d)(?![\w]|\.\d)"),
        words=("age",),
        anchored=True,
        needs_digit=True,
    ),
    # "Dr. Jane Roe", "Mrs Roe", "Prof J. Smith"
    _Pattern(
        "NAME",
        re.compile(rf"(?=[MDP])\b{_TITLE}[ \t]+(?P<v>{_SHORT_NAME})"),
        words=("Mr", "Mrs", "Ms", "Mx", "Miss", "Dr", "Prof", "Professor", "Doctor"),
        anchored=True,
    ),
    # "Patient: Jane Roe", "Pt name - John Q. Public", "Attending: Dr. Roe", "Referring physician: Amy Wu";
    # bare "Name:" only where no word precedes it ("Drug name: Metformin" is not a person)
    _Pattern(
        "NAME",
        re.compile(
            r"(?=[pPfFlLnNaArRsSdDeEgG])\b(?i:(?:patient|pt)(?:[ \t]+(?:full[ \t]+)?name)?"
            r"|(?:full|legal|preferred)[ \t]+name|(?<![A-Za-z][ \t])name|attending(?:[ \t]+(?:physician|doctor))?"
            r"|referring(?:[ \t]+(?:physician|doctor|provider|clinician))?|PCP|primary[ \t]+care[ \t]+physician"
            r"|physician|provider|surgeon|nurse|resident|dictated[ \t]+by"
            r"|emergency[ \t]+contact|next[ \t]+of[ \t]+kin|guardian|spouse)"
            rf"[ \t]*[:-][ \t]*(?:{_TITLE}[ \t]+)?(?P<v>{_LONG_NAME})"
        ),
        words=(
            "patient",
            "pt",
            "full",
            "legal",
            "preferred",
            "name",
            "attending",
            "referring",
            "pcp",
            "primary",
            "physician",
            "provider",
            "surgeon",
            "nurse",
            "resident",
            "dictated",
            "emergency",
            "next",
            "guardian",
            "spouse",
        ),
        anchored=True,
    ),
    # "patient named Jane Roe", "my name is Jane", "Electronically signed by: Amy Wu, MD", "Signed Dr Roe"
    _Pattern(
        "NAME",
        re.compile(
            r"(?=[nNsS])\b(?i:named|name[ \t]+is|signed(?:[ \t]+by)?)"
            rf"[ \t]*:?[ \t]*(?:{_TITLE}[ \t]+)?(?P<v>{_LONG_NAME})"
        ),
        words=("named", "name", "signed"),
        anchored=True,
    ),
    # Two capitalised words right before identifying context: "Jane Roe is a 65-year-old woman",
    # "Jane Roe (DOB 1/2/1950)", "Jane Roe, MRN 123456"; "Chest pain is a ..." has no age, so it is left alone
    _Pattern(
        "NAME",
        re.compile(
            rf"(?=[A-Z])(?<![\w.])(?P<v>{_TOKEN}[ \t]+(?:{_INITIAL}[ \t]+)?{_TOKEN})"
            r"(?=,?[ \t]+(?:(?:is|was)[ \t]+)?an?[ \t]+\d{1,3}[- \t]?(?:years?|yrs?|y/o|yo|y\.o)\b"
            r"|[ \t]*[,(][ \t]*(?:DOB|D\.O\.B|MRN|MR\#|born|age)\b)"
        ),
        words=("dob", "d.o.b", "mrn", "mr", "born", "age", "year", "yr", "y/o", "yo", "y.o"),
        reach=(80, 8),
    ),
)

_RUNS = re.compile(r"\d+")
# Characters past a stretch's reach that a match's lookaheads may read ("555-123-4567 lymph": not a unit, so a
# phone number): the stretch's end must not cut them off, or a match would be missed.
_MARGIN = 40
_LONGEST = [max(map(len, pattern.words), default=0) for pattern in _PATTERNS]
_KEYS = [str(index) for index in range(len(_PATTERNS))]
# Most answers hold no identifier: one Hyperscan pass says which patterns can match at all.
_PREFILTER = Prefilter({_KEYS[index]: pattern.regex for index, pattern in enumerate(_PATTERNS)}, TEXT_PREFILTERS)
_WORDS = Needles({_KEYS[index]: pattern.words for index, pattern in enumerate(_PATTERNS) if pattern.words})

# The order in which overlapping detections of the same extent are typed: the more specific label first.
RANK = {kind: rank for rank, kind in enumerate(("EMAIL", "URL", "SSN", "MRN", "ID", "DATE", "PHONE", "ADDRESS"))}
_TRIM = " \t\r\n,.;:!?)]}'\""


class Span(NamedTuple):
    start: int
    end: int
    kind: str
    rank: int


# --- pseudonymisation -----------------------------------------------------------------------------------


def trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Strip surrounding spaces and trailing punctuation ("Jan 2." -> "Jan 2") off a detected span."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def matches(text: str, everywhere: bool = False) -> list[Span]:
    """Every detection in ``text``, overlaps included: each pattern where it can match (``everywhere``: each
    pattern over the whole text, which finds the same; the tests compare the two)."""
    spans: list[Span] = []
    possible = None if everywhere else _PREFILTER.possible(text)
    if possible is not None and not possible:
        return spans  # most answers: no pattern can match anywhere
    folded = fold(text)
    near = clusters(text)
    words = _WORDS.find(text, folded)
    for index, pattern in enumerate(_PATTERNS):
        if possible is not None and _KEYS[index] not in possible:
            continue
        stretches = _where(index, pattern, text, folded, near, words, everywhere)
        if not stretches:
            continue
        group = "v" if "v" in pattern.regex.groupindex else 0
        for match in _matches(pattern, text, stretches):
            start, end = trim(text, *match.span(group))
            if start < end and (pattern.check is None or pattern.check(text[start:end])):
                spans.append(Span(start, end, pattern.kind, RANK.get(pattern.kind, len(RANK))))
    return spans


def _where(index: int, pattern: _Pattern, text: str, folded: str, clusters: list[Cluster],
           words: dict[str, list[int]], everywhere: bool) -> list[tuple[int, int]]:  # fmt: skip
    """The stretches of ``text`` the pattern runs on."""
    whole = [(0, len(text))]
    if everywhere:
        return whole
    if pattern.needs_digit and not clusters:
        return []
    if pattern.needles:
        return whole if any(needle in folded for needle in pattern.needles) else []
    if pattern.gate is not None:
        return whole if pattern.gate(folded) else []
    if pattern.words:
        positions = words.get(_KEYS[index])
        if not positions or pattern.reach is None:
            return whole if positions else []
        if pattern.anchored:
            return [(position, position) for position in positions]
        before, after = pattern.reach
        return list(windows(positions, len(text), (before, _LONGEST[index] + after + _MARGIN)))
    if pattern.cluster is not None and pattern.reach is not None:
        need, (before, after) = pattern.cluster, pattern.reach
        near = [(max(0, c.start - before), min(len(text), c.end + after + _MARGIN)) for c in clusters if need.admits(c)]
        return _merged(near)
    return whole


def _matches(pattern: _Pattern, text: str, stretches: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    """The pattern's matches in the stretches, as a pass over the whole text finds them: a stretch's end may cut
    a match short or let a lookahead pass, so each match is taken again from the whole text."""
    if stretches == [(0, len(text))]:
        yield from pattern.regex.finditer(text)
        return
    cursor = 0
    for start, end in stretches:
        if start == end:  # an anchor: a match starts here or nowhere
            match = pattern.regex.match(text, start) if start >= cursor else None
            if match is not None and match.end() > match.start():
                yield match
                cursor = match.end()
            continue
        for found in pattern.regex.finditer(text, max(start, cursor), end):
            if found.start() < cursor:
                continue
            match = pattern.regex.match(text, found.start())
            if match is not None and match.end() > match.start():
                yield match
                cursor = match.end()


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans in text order. Overlapping detections merge into the first (earliest, longest,
    most specific) so that no part of an identifier is left in clear."""
    resolved: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end, s.rank)):
        if resolved and span.start < resolved[-1].end:
            if span.end > resolved[-1].end:
                resolved[-1] = resolved[-1]._replace(end=span.end)
            continue
        resolved.append(span)
    return resolved
