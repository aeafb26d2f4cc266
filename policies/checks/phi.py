"""``phi_leak``: identifiers in a model's answer that the caller did not supply.

The recognisers are the gateway's own (text/identifiers.py: names in clinical context, dates of birth and
other dates, phone numbers, e-mail addresses, record numbers, labelled account/NPI/DEA numbers, SSNs,
addresses), plus unlabelled NPI numbers (10 digits passing the Luhn check with the 80840 prefix) and DEA
registration numbers (two letters and seven digits passing the DEA check digit). An identifier that appears
in the caller's own input (their turns and documents, compared without case, spaces or punctuation) is an
echo, not a leak: a summary of a note may repeat the note's MRN to the clinician who sent it.

Not Presidio: its recognisers need a spaCy language model, and no model may be downloaded at run time here;
these rules ship in the package. They find structured identifiers well and free-standing names only in
clinical context ("Jane Roe, 65-year-old", "Mrs Roe"); a bare name with nothing around it is missed.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from policies.checks.base import Context, Finding
from text.identifiers import Span, matches, resolve
from text.normal import NUMBER_WORDS
from text.scan import TEXT_PREFILTERS, Prefilter

NPI = re.compile(r"(?<!\d)\d{10}(?!\d)")
DEA = re.compile(r"\b[ABCDEFGHJKLMPRSTUX][A-Z9]\d{7}\b")
_FOLD = re.compile(r"[\W_]+")


NUMBERS = Prefilter({"NPI": NPI, "DEA": DEA}, TEXT_PREFILTERS)  # most answers hold neither: one Hyperscan pass says so


def _luhn_npi(number: str) -> bool:
    """The NPI check digit: Luhn over "80840" + the first nine digits."""
    digits = [int(d) for d in "80840" + number]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return total % 10 == 0


def _dea_valid(value: str) -> bool:
    d = [int(c) for c in value[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def _fold(text: str) -> str:
    return _FOLD.sub("", text).lower()


class _Supplied(NamedTuple):
    """The caller's words folded (no case, spaces or punctuation) and, per character, whether anything was
    folded away before it: where one number of theirs ended and the next began."""

    folded: str
    gap_before: list[bool]


def _supplied(text: str) -> _Supplied:
    folded: list[str] = []
    gaps: list[bool] = []
    gap = False
    for c in text.lower():
        if c.isalnum():
            folded.append(c)
            gaps.append(gap)
            gap = False
        else:
            gap = True
    gaps.append(True)
    return _Supplied("".join(folded), gaps)


def _echoed(value: str, supplied: _Supplied) -> bool:
    """Whether the caller wrote this identifier: found in their folded words, and where it begins or ends with a
    digit, not inside a longer number of theirs ("5551234" is not supplied by "95551234567")."""
    text, gaps = supplied
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        opens = not value[0].isdigit() or start == 0 or gaps[start] or not text[start - 1].isdigit()
        closes = not value[-1].isdigit() or end == len(text) or gaps[end] or not text[end].isdigit()
        if opens and closes:
            return True
        start = text.find(value, start + 1)
    return False


# A period, not a person's date: "between April 1996 and December 2000", "from 1 January 1996 to 31 December 1998".
_RANGE_OPENS = re.compile(r"\b(?:between|from|during(?: the (?:year|period))?)\s*$", re.IGNORECASE)
# "from January to September 2004", "the months of October and November, 2004": a month, then the date it runs to
_MONTH_BEFORE = re.compile(
    r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s*(?:and|to|through|until|till|-|\u2013)\s*$",
    re.IGNORECASE,
)
_RANGE_JOINS = re.compile(r"\s*,?\s*(?:and|to|through(?: to)?|until|till|-|\u2013|\u2014)\s*", re.IGNORECASE)


# A month and a year with no day ("November 2005") identify a person only when the sentence is about one.
_MONTH_YEAR = re.compile(r"[A-Za-z]+\.?[ \t,-]+(?:19|20)\d{2}")
_ONE_PERSON = re.compile(
    r"\b(?:patient|he|she|his|her|him|you|your|mr|mrs|ms|admitted|discharged|born|died|dob|visited|seen|presented)\b",
    re.IGNORECASE,
)
_SENTENCE = re.compile(r"[.!?](?=\s)|\n")


def _about_one_person(text: str, start: int, end: int) -> bool:
    before = [m.end() for m in _SENTENCE.finditer(text, 0, start)]
    after = _SENTENCE.search(text, end)
    return _ONE_PERSON.search(text, before[-1] if before else 0, after.end() if after else len(text)) is not None


def _without_periods(text: str, spans: list[Span]) -> list[Span]:
    """The spans less the dates of periods (a study's or a service's dates, which identify no one): both dates of
    "between D1 and D2" / "from D1 to D2", a date a month runs to ("from January to September 2004"), and a month
    and year with no day in a sentence about no one person ("164 patients since November 2005")."""
    period: set[int] = set()
    for i, span in enumerate(spans):
        if span.kind != "DATE":
            continue
        if _MONTH_BEFORE.search(text, max(0, span.start - 16), span.start):
            period.add(i)
        following = spans[i + 1] if i + 1 < len(spans) else None
        if (following is not None and following.kind == "DATE"
                and _RANGE_JOINS.fullmatch(text, span.end, following.start)
                and _RANGE_OPENS.search(text, max(0, span.start - 30), span.start)):  # fmt: skip
            period.update((i, i + 1))
        elif _MONTH_YEAR.fullmatch(text, span.start, span.end) and not _about_one_person(text, span.start, span.end):
            period.add(i)  # a month of a study, a season of a service: no one's date
    return [span for i, span in enumerate(spans) if i not in period]


# Where an identifier can begin: a number, the word holding an "@", a web address, a capitalised word (a name,
# a title, a month, a label) other than the words sentences commonly open with.
_STARTS = re.compile(r"(?<![\d\w])\d|\S*@|\b(?:https?|www)\b|\b[A-Z][\w'-]*")
_OPENERS = frozenset({
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "avoid", "be", "because", "before",
    "both", "but", "by", "call", "can", "check", "consider", "contact", "continue", "do", "does", "don't", "each",
    "either", "even", "every", "few", "first", "for", "from", "get", "give", "go", "have", "he", "her", "here",
    "his", "how", "however", "i", "if", "in", "is", "it", "its", "keep", "let", "make", "many", "may", "more",
    "most", "much", "my", "no", "not", "of", "on", "once", "one", "only", "or", "other", "our", "please", "rest",
    "see", "seek", "she", "should", "since", "so", "some", "start", "stop", "take", "tell", "than", "that", "the",
    "their", "then", "there", "these", "they", "this", "those", "to", "try", "until", "use", "very", "we", "what",
    "when", "where", "whether", "which", "while", "who", "why", "with", "within", "without", "you", "your", "yes",
})  # fmt: skip


_FOLLOWED_BY_LOWER = re.compile(r" [a-z]")


def _opens_sentence(text: str, position: int) -> bool:
    before = text[:position].rstrip(" ")
    return not before or before[-1] in ".!?\n"


class PhiLeak:
    name = "phi_leak"

    def may_grow(self, word: str) -> bool:
        """Whether a word still arriving could become an identifier: anything but lower-case letters (a name, a
        number, an address with "@" or "."), or the beginning of a number in words. A plain lower-case word could
        still become the local part of an e-mail address ("janeroe@..."): that word leaves, and only what follows
        it is redacted."""
        if not (word.isalpha() and word.islower()):
            return True
        return any(number.startswith(word) for number in NUMBER_WORDS)  # "fou" of a "four five ..." identifier

    def starts(self, text: str) -> list[int]:
        """Where a finding of this check can begin (a stream holds text from there until its sentence ends). A
        capitalised word that opens a sentence and is followed by a lower-case word cannot: every name the
        recognisers know is a capitalised word after a title or a label, or two of them, or one before an age."""
        found = []
        for m in _STARTS.finditer(text):
            word = m.group()
            if word.lower() in _OPENERS:
                continue
            if word[:1].isupper() and _FOLLOWED_BY_LOWER.match(text, m.end()) and _opens_sentence(text, m.start()):
                continue
            found.append(m.start())
        return found

    def __call__(self, text: str, context: Context) -> list[Finding]:
        spans = matches(text)
        possible = NUMBERS.possible(text)
        if possible is None or "NPI" in possible:
            spans += [Span(m.start(), m.end(), "NPI", -1) for m in NPI.finditer(text) if _luhn_npi(m.group())]
        if possible is None or "DEA" in possible:
            spans += [Span(m.start(), m.end(), "DEA", -1) for m in DEA.finditer(text) if _dea_valid(m.group())]
        if not spans:
            return []
        supplied = context.once("phi_supplied", _supplied)  # the caller's words, read only when there is something
        findings = []
        for start, end, kind, _ in _without_periods(text, resolve(spans)):
            value = _fold(text[start:end])
            if value and _echoed(value, supplied):
                continue  # the caller's own identifier, echoed back to them
            findings.append(Finding(self.name, start, end, {"kind": kind}))
        return findings
