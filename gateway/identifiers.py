"""Finding identifiers in clinical text: the patterns, and how overlapping matches resolve.

gateway/privacy.py replaces what ``matches`` and ``resolve`` find; its docstring says what is detected and
what is missed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

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
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|"
    r"Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq)\b\.?"
)
# A period inside a labelled address that does not end it: street abbreviations ("12 Oak St., Springfield").
_ADDRESS_DOT = r"(?:(?<=\bSt)|(?<=\bDr)|(?<=\bRd)|(?<=\bLn)|(?<=\bCt)|(?<=\bAve)|(?<=\bApt)|(?<=\bSte)|(?<=\bBlvd))\."


class _Pattern(NamedTuple):
    kind: str  # the placeholder type
    regex: re.Pattern[str]  # the identifier is group "v" when the regex has one, else the whole match
    check: Callable[[str], bool] | None = None  # a further test of the matched value
    # The regex runs only on text whose lower-case form contains one of these (none: always). A substring test
    # costs microseconds; a regex pass with a long case-insensitive alternation costs a hundred times more.
    needles: tuple[str, ...] = ()


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
        needles=("://", "www."),
    ),
    # "SSN: 123-45-6789", "social security number 123456789"
    _Pattern(
        "SSN",
        re.compile(
            r"(?=[sS])\b(?i:SSN|social[ \t]+security(?:[ \t]+(?:number|no\b\.?|\#))?)[ \t]*(?:is[ \t]+)?[:#]?[ \t]*"
            r"(?P<v>\d{3}[ -]?\d{2}[ -]?\d{4})\b"
        ),
        needles=("ssn", "social"),
    ),
    # bare "123-45-6789"
    _Pattern("SSN", re.compile(r"(?=\d)(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), needles=("-",)),
    # "MRN: 00123456", "MR# A12345", "medical record number 987654", "Patient ID: P-12345"
    _Pattern(
        "MRN",
        re.compile(
            r"(?=[mMrRpP])\b(?i:MRN|MR[ \t]*\#|MR[ \t]+no\b\.?|(?:medical[ \t]+)?record[ \t]+(?:number|no\b\.?|\#)"
            r"|(?:patient|pt)[ \t]+(?:id|identifier|number|no\b\.?))"
            r"[ \t]*(?:is[ \t]+)?[:#]?[ \t]*(?P<v>[A-Za-z0-9][A-Za-z0-9-]{3,})"
        ),
        _has_digit,
        ("mr", "record", "patient", "pt"),
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
        (
            "acct",
            "account",
            "encounter",
            "visit",
            "csn",
            "fin",
            "npi",
            "dea",
            "insur",
            "member",
            "subscr",
            "polic",
            "claim",
        ),
    ),
    # "1/2/2024", "02.01.2024", "2024-01-02", "03/2024"; not "7.4", "120/80", "1/2 tablet"
    _Pattern(
        "DATE",
        re.compile(
            rf"(?=\d)(?<![\w/.-])(?:{_DAY_OR_MONTH}[/.-]{_DAY_OR_MONTH}[/.-](?:(?:19|20)\d{{2}}|\d{{2}})"
            rf"|(?:19|20)\d{{2}}[/.-](?:0?[1-9]|1[0-2])[/.-]{_DAY_OR_MONTH}"
            rf"|(?:0?[1-9]|1[0-2])/(?:19|20)\d{{2}})(?![\w/-]|\.\d)"
        ),
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
        needles=("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    ),
    # "DOB: 01021950", "D.O.B. 1950-01-02", "date of birth 1950" (forms the date patterns above leave out)
    _Pattern(
        "DATE",
        re.compile(
            r"(?=[dDbB])\b(?i:DOB\b|D\.O\.B\b\.?|date[ \t]+of[ \t]+birth\b|birth[ \t]*date\b|born(?:[ \t]+on)?\b)"
            r"[ \t]*[:#-]?[ \t]*(?P<v>\d{1,4}[/.-]\d{1,2}(?:[/.-]\d{2,4})?|\d{6,8}|(?:19|20)\d{2})\b"
        ),
        needles=("dob", "d.o.b", "birth", "born"),
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
    ),
    # "Phone: 555-1234", "fax 555 1234 ext 12", "Tel. (0)20 7946 0958", "call back at 5551234"
    _Pattern(
        "PHONE",
        re.compile(
            r"(?=[pPtTcCmMfFbB])\b(?i:(?:phone|telephone|tel|cell|mobile|fax|pager|beeper|call(?:[ \t]+back)?"
            r"(?:[ \t]+at)?)\b\.?(?:[ \t]*(?:no\b\.?|number|\#))?)[ \t]*[:#]?[ \t]*(?P<v>\+?\(?\d[\d ().-]{3,}\d)(?!\w)"
        ),
        _labelled_phone_digits,
        ("phone", "tel", "cell", "mobile", "fax", "pager", "beeper", "call"),
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
    ),
    # "Springfield, IL 62704", "Boston MA 02115-1234": a US ZIP after a state code (with the city before it)
    _Pattern(
        "ADDRESS",
        re.compile(
            rf"(?=[A-Z])\b(?:[A-Z][a-z]+(?:[ \t]+[A-Z][a-z]+){{0,2}},?[ \t]+)?(?:{_STATES})[ \t]+\d{{5}}(?:-\d{{4}})?\b"
        ),
    ),
    # "Address: 4 Rue de la Paix, Paris" (to the end of the line, a ";" or a sentence-ending period)
    _Pattern(
        "ADDRESS",
        re.compile(
            r"(?=[hHmMsSpPaA])\b(?i:(?:home[ \t]+|mailing[ \t]+|street[ \t]+|postal[ \t]+)?address\b)[ \t]*[:-][ \t]*"
            rf"(?P<v>[A-Za-z0-9](?:[^\n;.\[]|\.(?=\S)|{_ADDRESS_DOT}){{1,120}})"
        ),
        needles=("address",),
    ),
    # "192.168.1.20"; not "7.4" or "1.2.3"
    _Pattern(
        "IP",
        re.compile(r"(?=\d)(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\w]|\.\d)"),
        needles=(".",),
    ),
    # "fe80::1", "2001:0db8:0000:0000:0000:ff00:0042:8329"; not "12:30"
    _Pattern(
        "IP",
        re.compile(
            r"(?=[0-9A-Fa-f])(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
            r"|(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?)(?![\w:])"
        ),
        needles=("::", ":0", ":1", ":2", ":3", ":4", ":5", ":6", ":7", ":8", ":9", ":a", ":b", ":c", ":d", ":e", ":f"),
    ),
    # "a 92-year-old", "95 y/o", "101 years old", "93 yo"; not "65-year-old"
    _Pattern(
        "AGE",
        re.compile(
            r"(?=[19])(?<![\w.])(?P<v>9\d|1[0-4]\d)(?=[- \t]?(?:years?|yrs?)[- \t]old\b|[- \t]?(?:y/o|yo)\b"
            r"|[- \t]?y\.o\b|[- \t]?(?:years?|yrs?)[ \t]+of[ \t]+age\b)"
        ),
        needles=("year", "yr", "y/o", "yo", "y.o"),
    ),
    # "aged 94", "Age: 91"; not "aged 65"
    _Pattern(
        "AGE",
        re.compile(r"(?=[aA])\b(?i:aged?)\b[ \t]*[:=]?[ \t]*(?P<v>9\d|1[0-4]\d)(?![\w]|\.\d)"),
        needles=("age",),
    ),
    # "Dr. Jane Roe", "Mrs Roe", "Prof J. Smith"
    _Pattern(
        "NAME",
        re.compile(rf"(?=[MDP])\b{_TITLE}[ \t]+(?P<v>{_SHORT_NAME})"),
        needles=("mr", "ms", "mx", "miss", "dr", "prof", "doctor"),
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
        needles=(":", "-"),
    ),
    # "patient named Jane Roe", "my name is Jane", "Electronically signed by: Amy Wu, MD", "Signed Dr Roe"
    _Pattern(
        "NAME",
        re.compile(
            r"(?=[nNsS])\b(?i:named|name[ \t]+is|signed(?:[ \t]+by)?)"
            rf"[ \t]*:?[ \t]*(?:{_TITLE}[ \t]+)?(?P<v>{_LONG_NAME})"
        ),
        needles=("name", "signed"),
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
        needles=("dob", "d.o.b", "mrn", "mr#", "born", "age", "year", "yr", "y/o", "yo", "y.o"),
    ),
)

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


def matches(text: str) -> list[Span]:
    """Every detection in ``text``, overlaps included: one pass of each pattern."""
    spans = []
    lowered = text.lower()
    for pattern in _PATTERNS:
        if pattern.needles and not any(needle in lowered for needle in pattern.needles):
            continue
        group = "v" if "v" in pattern.regex.groupindex else 0
        for match in pattern.regex.finditer(text):
            start, end = trim(text, *match.span(group))
            if start < end and (pattern.check is None or pattern.check(text[start:end])):
                spans.append(Span(start, end, pattern.kind, RANK.get(pattern.kind, len(RANK))))
    return spans


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
