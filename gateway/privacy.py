"""PHI protection for sampled exchanges before they leave the gateway: pseudonymisation or encryption.

``pseudonymise(sample)`` replaces identifiers in the clinical text of a sample (the shape of
``judges.sample.Sample.model_dump()``) with typed placeholders such as ``[NAME_1]``, ``[MRN_1]`` or ``[DATE_2]``.
Within one sample the same original maps to the same placeholder everywhere, request and response alike, so a
judge can still see that the answer repeats the patient's name or a date from the question. Placeholders are
numbered per sample and mean nothing across samples.

``encrypt(sample, key)`` moves ``request`` and ``response`` into a Fernet token instead; ``decrypt`` reverses
it. ``load_key(env_name)`` reads the Fernet key from the environment.

Text covered: in ``request``, ``messages[].content`` (a string, or the ``text`` of each content part), the
string values inside ``messages[].tool_calls[].function.arguments`` (and the legacy ``function_call``),
``prompt`` and ``input`` (a string or a list of strings); in ``response``, ``choices[].content`` and the
choices' tool calls (also inside a ``message`` or ``delta`` object, where a choice has one). Nothing else is
touched: model, parameters, roles, tool names, ids and the message ``name`` field pass through as they are.

Detected (regular expressions, each documented with an example where it is defined below): e-mail addresses;
phone and fax numbers; record, account, encounter, insurance and similar ids when a label introduces them, and
bare SSNs; dates (numeric, written out, month and year, labelled dates of birth), never durations or ages;
street addresses, "City, ST 12345" and labelled addresses; URLs and IP addresses; person names after a title
or a label, or right before a "DOB"/"MRN"/"a 65-year-old" context; ages over 89 (``[AGE_90+]``, HIPAA). Once a
name is found, its other occurrences in the sample (the full name, the last name alone, the first name alone)
become the same placeholder; names that share a last name share a placeholder.

Known limits, stated plainly: this is pattern matching, not understanding.
- A name with no title, label or context (``"Jane said her knee hurts"``) is missed unless the same name was
  found elsewhere in the sample. Lower-case names are missed. A model-based recogniser comes with the safety
  checks later; until then pseudonymised text is *reduced*, not guaranteed free of identifiers.
- A label or title followed by a capitalised non-name (``"Attending: Cardiology Team"``, ``"Dr Smith Aspirin"``)
  is taken as a name, and every capitalised occurrence of those words in the sample is then replaced too
  (capitalised words with common generic-drug endings such as "-formin" or "-pril" are never name words).
- The message ``name`` field and the request's ``user`` field are left alone, as the contract says, although
  a client could put a person's name there.
- Cities are only caught before a state code and ZIP; hospital names, employers, relatives' names without a
  label, free-text ids without a label and unusual date formats are missed.
- Over-redaction is preferred to leaks: overlapping detections merge into one placeholder.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from cryptography.fernet import Fernet, InvalidToken

__all__ = ["PrivacyError", "decrypt", "encrypt", "load_key", "pseudonymise"]


class PrivacyError(Exception):
    """A sample could not be protected or unprotected: bad key, tampered token, wrong state. Never holds PHI."""


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
_PLACEHOLDER = re.compile(r"\[(?P<kind>[A-Z]+)_(?:(?P<n>\d+)|90\+)\]")

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
_RANK = {kind: rank for rank, kind in enumerate(("EMAIL", "URL", "SSN", "MRN", "ID", "DATE", "PHONE", "ADDRESS"))}
_TRIM = " \t\r\n,.;:!?)]}'\""


class _Span(NamedTuple):
    start: int
    end: int
    kind: str
    rank: int


# --- pseudonymisation -----------------------------------------------------------------------------------


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Strip surrounding spaces and trailing punctuation ("Jan 2." -> "Jan 2") off a detected span."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1] in _TRIM:
        end -= 1
    return start, end


def _matches(text: str) -> list[_Span]:
    """Every detection in ``text``, overlaps included: one pass of each pattern."""
    spans = []
    lowered = text.lower()
    for pattern in _PATTERNS:
        if pattern.needles and not any(needle in lowered for needle in pattern.needles):
            continue
        group = "v" if "v" in pattern.regex.groupindex else 0
        for match in pattern.regex.finditer(text):
            start, end = _trim(text, *match.span(group))
            if start < end and (pattern.check is None or pattern.check(text[start:end])):
                spans.append(_Span(start, end, pattern.kind, _RANK.get(pattern.kind, len(_RANK))))
    return spans


def _resolve(spans: list[_Span]) -> list[_Span]:
    """Non-overlapping spans in text order. Overlapping detections merge into the first (earliest, longest,
    most specific) so that no part of an identifier is left in clear."""
    resolved: list[_Span] = []
    for span in sorted(spans, key=lambda s: (s.start, -s.end, s.rank)):
        if resolved and span.start < resolved[-1].end:
            if span.end > resolved[-1].end:
                resolved[-1] = resolved[-1]._replace(end=span.end)
            continue
        resolved.append(span)
    return resolved


def _squash(value: str) -> str:
    return " ".join(value.split())


def _name_words(name: str) -> list[str]:
    """The words of a name without initials: "J. Smith" -> ["Smith"]."""
    return [word for word in name.split() if not word.endswith(".") and len(word) > 1]


def _key(kind: str, value: str) -> str:
    """What makes two detections the same identifier: "(555) 123-4567" and "555.123.4567" are one phone."""
    if kind == "PHONE":
        return "".join(ch for ch in value if ch.isdigit())
    if kind in ("MRN", "SSN", "ID"):
        return "".join(ch for ch in value if ch.isalnum()).upper()
    if kind == "NAME":
        words = _name_words(value)
        return (words[-1] if words else value).casefold()
    return _squash(value).casefold()


def _json_hint(key: str) -> str | None:
    """The identifier kind a JSON key announces ("patient_name", "dateOfBirth"), if any."""
    return _KEY_KINDS.get("".join(ch for ch in key.lower() if ch.isalnum()))


# JSON keys (lower case, letters and digits only) whose whole string value is an identifier of that kind.
# A plain "name" is not among them: tool arguments name drugs, tests and files far more often than people.
_KEY_KINDS = {
    **dict.fromkeys(
        (
            "patient",
            "patientname",
            "fullname",
            "firstname",
            "lastname",
            "givenname",
            "familyname",
            "surname",
            "middlename",
        ),
        "NAME",
    ),
    **dict.fromkeys(("mrn", "medicalrecordnumber", "recordnumber", "patientid"), "MRN"),
    **dict.fromkeys(("ssn", "socialsecuritynumber"), "SSN"),
    **dict.fromkeys(("dob", "dateofbirth", "birthdate", "birthday"), "DATE"),
    **dict.fromkeys(("email", "emailaddress"), "EMAIL"),
    **dict.fromkeys(("phone", "phonenumber", "telephone", "mobile", "cell", "fax"), "PHONE"),
    **dict.fromkeys(("address", "streetaddress", "homeaddress", "zip", "zipcode", "postalcode"), "ADDRESS"),
}

Visit = Callable[[str, str | None], str]


class _Pseudonymiser:
    """Per-sample state. ``collect`` is called on every covered text first (detection, name registry,
    placeholders already present); ``replace`` then rewrites each text with placeholders numbered in order
    of first appearance."""

    def __init__(self) -> None:
        self._spans: dict[tuple[str | None, str], list[_Span]] = {}
        self._names: dict[str, str] = {}  # a name form as written -> its group (last name, case-folded)
        self._numbers: dict[str, int] = {}  # per kind: the last number used
        self._placeholders: dict[tuple[str, str], str] = {}
        self._bare: re.Pattern[str] | None = None

    def collect(self, text: str, hint: str | None) -> str:
        """Detect identifiers in ``text`` and remember them; returns ``text`` unchanged."""
        key = (hint, text)
        if key not in self._spans:
            self._spans[key] = self._hinted(text, hint) if hint else self._detect(text)
        return text

    def replace(self, text: str, hint: str | None) -> str:
        """``text`` with its identifiers, and the bare occurrences of every name found, as placeholders."""
        spans = self._spans.get((hint, text))
        if spans is None:  # not collected: the walk visits the same texts twice, but stay safe regardless
            spans = self._spans[(hint, text)] = self._hinted(text, hint) if hint else self._detect(text)
        if self._bare is not None:
            spans = _resolve(spans + self._bare_spans(text))
        return self._substitute(text, spans)

    def finish_collecting(self) -> None:
        """Build the matcher of bare name occurrences from every name found, longest form first."""
        if self._names:
            forms = sorted(self._names, key=len, reverse=True)
            alternatives = "|".join(r"\s+".join(map(re.escape, form.split())) for form in forms)
            self._bare = re.compile(rf"(?<![\w\[])(?:{alternatives})(?![\w\]])")

    def _detect(self, text: str) -> list[_Span]:
        blocked = []
        for match in _PLACEHOLDER.finditer(text):
            blocked.append(match.span())
            if match["n"] is not None:
                self._numbers[match["kind"]] = max(self._numbers.get(match["kind"], 0), int(match["n"]))
        spans = [s for s in _matches(text) if not any(s.start < end and start < s.end for start, end in blocked)]
        for span in spans:
            if span.kind == "NAME":
                self._register(text[span.start : span.end])
        return _resolve(spans)

    def _hinted(self, text: str, kind: str) -> list[_Span]:
        """The whole value is an identifier of ``kind`` (a JSON value under a key such as "dob")."""
        start, end = _trim(text, 0, len(text))
        if start == end or _PLACEHOLDER.fullmatch(text[start:end]):
            return []
        if kind == "NAME":
            self._register(text[start:end])
        return [_Span(start, end, kind, 0)]

    def _register(self, name: str) -> None:
        """Remember a name's forms for its bare occurrences: the full name, the last and the first name."""
        words = _name_words(name)
        if not words:
            return
        group = words[-1].casefold()
        forms = {_squash(name), words[-1], words[0]} if len(words[0]) > 2 else {_squash(name), words[-1]}
        for form in forms:
            self._names.setdefault(form, group)
            self._names.setdefault(form.upper(), group)

    def _bare_spans(self, text: str) -> list[_Span]:
        assert self._bare is not None
        rank = len(_RANK) + 1  # a detection of the same extent types the span, not the bare name
        return [_Span(m.start(), m.end(), "NAME", rank) for m in self._bare.finditer(text)]

    def _substitute(self, text: str, spans: list[_Span]) -> str:
        if not spans:
            return text
        pieces = []
        position = 0
        for span in spans:
            pieces.append(text[position : span.start])
            pieces.append(self._placeholder(span.kind, text[span.start : span.end]))
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces)

    def _placeholder(self, kind: str, value: str) -> str:
        if kind == "AGE":
            return "[AGE_90+]"  # HIPAA's aggregate category: the age itself is the identifier, not a person
        key = (
            (kind, self._names.get(_squash(value)) or _key(kind, value))
            if kind == "NAME"
            else (kind, _key(kind, value))
        )
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            self._numbers[kind] = self._numbers.get(kind, 0) + 1
            placeholder = self._placeholders[key] = f"[{kind}_{self._numbers[kind]}]"
        return placeholder


def _visit_json(value: Any, visit: Visit, hint: str | None) -> Any:
    """A JSON value with its strings visited; a key such as "dob" makes its value an identifier outright."""
    if isinstance(value, str):
        return visit(value, hint)
    if isinstance(value, int) and not isinstance(value, bool) and hint is not None:
        visited = visit(str(value), hint)
        return value if visited == str(value) else visited
    if isinstance(value, list):
        return [_visit_json(item, visit, hint) for item in value]
    if isinstance(value, dict):
        return {key: _visit_json(item, visit, _json_hint(key)) for key, item in value.items()}
    return value


def _visit_arguments(arguments: str, visit: Visit) -> str:
    """Tool-call arguments: a JSON string whose string values are visited; the result is still JSON.
    Arguments that are not JSON (a truncated stream) are visited as plain text."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return visit(arguments, None)
    visited = _visit_json(parsed, visit, None)
    return arguments if visited == parsed else json.dumps(visited, ensure_ascii=False)


def _visit_calls(message: dict[str, Any], visit: Visit) -> None:
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    functions.append(message.get("function_call"))
    for function in functions:
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = _visit_arguments(function["arguments"], visit)


def _visit_message(message: dict[str, Any], visit: Visit) -> None:
    """A chat message or a response choice, in place: its content and its tool calls' arguments."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = visit(content, None)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = visit(part["text"], None)
    _visit_calls(message, visit)


def _visit_texts(value: Any, visit: Visit) -> Any:
    """``prompt`` or ``input``: a string or a list of strings (token-id lists pass through)."""
    if isinstance(value, str):
        return visit(value, None)
    if isinstance(value, list):
        return [visit(item, None) if isinstance(item, str) else item for item in value]
    return value


def _visit_sample(sample: dict[str, Any], visit: Visit) -> None:
    """Every covered text of ``sample``, in place, request before response."""
    request = sample.get("request")
    if isinstance(request, dict):
        messages = request.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict):
                _visit_message(message, visit)
        for field in ("prompt", "input"):
            if field in request:
                request[field] = _visit_texts(request[field], visit)
    response = sample.get("response")
    choices = response.get("choices") if isinstance(response, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            _visit_message(choice, visit)
            for nested in ("message", "delta"):
                if isinstance(choice.get(nested), dict):
                    _visit_message(choice[nested], visit)


def pseudonymise(sample: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a sample dict (the shape of judges.sample.Sample.model_dump()) whose identifiers are
    replaced by typed placeholders, consistently across the request and the response: the same original
    string maps to the same placeholder everywhere in this sample (e.g. "[NAME_1]", "[MRN_1]", "[DATE_2]"),
    so judges can still compare request and response. Sets sample["privacy"] = "pseudonymised".

    The input is not modified. Idempotent: placeholders already present are left alone and their numbers
    are not reused. Raises PrivacyError for an encrypted sample (there is no clear text to work on)."""
    if sample.get("privacy") == "encrypted":
        raise PrivacyError("cannot pseudonymise an encrypted sample; decrypt it first")
    result = copy.deepcopy(sample)
    state = _Pseudonymiser()
    _visit_sample(result, state.collect)  # collect changes nothing: the walk only needs to see every text
    state.finish_collecting()
    _visit_sample(result, state.replace)
    result["privacy"] = "pseudonymised"
    return result


# --- encryption -----------------------------------------------------------------------------------------


def _fernet(key: bytes) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise PrivacyError("not a valid Fernet key (32 url-safe base64-encoded bytes)") from None


def encrypt(sample: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Copy with "request" and "response" moved into sample["ciphertext"] (a Fernet token of their JSON),
    request={} and response={} left behind, privacy="encrypted".

    The token's plaintext is ``{"request": ..., "response": ...}``. The input is not modified. Raises
    PrivacyError for a malformed key, a sample already encrypted (its ciphertext would be lost) or content
    that is not JSON."""
    if sample.get("privacy") == "encrypted" or sample.get("ciphertext") is not None:
        raise PrivacyError("sample is already encrypted")
    fernet = _fernet(key)
    try:
        plaintext = json.dumps({"request": sample.get("request", {}), "response": sample.get("response", {})})
    except (TypeError, ValueError):
        raise PrivacyError("sample content is not JSON-serialisable") from None
    result = copy.deepcopy({k: v for k, v in sample.items() if k not in ("request", "response")})
    result.update(request={}, response={}, ciphertext=fernet.encrypt(plaintext.encode()).decode(), privacy="encrypted")
    return result


def decrypt(sample: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The inverse: request and response restored, ciphertext None; raises PrivacyError on a wrong key or a
    tampered token.

    The token does not record how the text was treated before encryption, so the result says
    privacy="raw": it must be handled as PHI unless the caller knows it was pseudonymised first."""
    token = sample.get("ciphertext")
    if not isinstance(token, str):
        raise PrivacyError("sample has no ciphertext")
    try:
        plaintext = _fernet(key).decrypt(token.encode())
    except InvalidToken:
        raise PrivacyError("ciphertext does not verify: wrong key or tampered token") from None
    content = json.loads(plaintext)
    if not isinstance(content, dict) or not {"request", "response"} <= content.keys():
        raise PrivacyError("decrypted content is not a sample's request and response")
    result = copy.deepcopy(sample)
    result.update(request=content["request"], response=content["response"], ciphertext=None, privacy="raw")
    return result


def load_key(env_name: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) in environment variable ``env_name``. Raises PrivacyError
    naming the variable, never its value, when it is unset, empty or malformed."""
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise PrivacyError(f"{env_name} is not set: it must hold a Fernet key")
    key = value.encode()
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise PrivacyError(f"{env_name} does not hold a valid Fernet key (32 url-safe base64-encoded bytes)") from None
    return key
