"""One normalisation that every policy check reads, with a map back to the text as written.

A check that reads "50mg" in full-width letters, "5<zero-width space>0 mg", "paracetamol" with a Cyrillic "a",
"5 0 mg" or "fifteen grams" must see what a reader sees: "50mg", "50 mg", "paracetamol", "50 mg", "15 grams".
``normal(text)`` gives that text and, for each of its characters, the span of the original it came from, so
that a finding in the normal text blocks or redacts exactly the characters written:

* NFKC, character by character (full-width and compatibility forms, ligatures, superscript digits);
* format and zero-width characters removed (Unicode category Cf: zero-width spaces and joiners, the soft
  hyphen, bidirectional controls, the byte order mark);
* confusables folded: a letter or digit of another script drawn like a Latin letter or an ASCII digit becomes
  that character (Unicode's confusables table, from the confusable-homoglyphs package, read on first need);
* numbers in words become digits ("fifteen" 15, "two hundred and fifty" 250, text2num; a single word up to
  "twelve" stays as written, the checks read those themselves: "on one side", "two tablets"), and digits
  written one by one with single spaces between them are joined ("5 0" 50, "four five six" 456).

ASCII text with no number word and no spaced digits, by far the most common answer, is returned as it is.
Known cost of the last rule: "take 2 5 mg tablets" reads as "take 25 mg tablets"; a check then errs towards
the dose it would block.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources
from typing import NamedTuple

import orjson
from text_to_num import text2num

from text.scan import TEXT_PREFILTERS, Prefilter

_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ("hundred", "thousand", "million")
# Single words the checks read as written ("on one side", "every four hours", "two tablets").
_AS_WRITTEN = frozenset(_UNITS[:13])
NUMBER_WORDS = frozenset([*_UNITS, *_TENS, *_SCALES])  # what may become digits here
_DIGIT_WORDS = {word: str(value) for value, word in enumerate(_UNITS[:10])}
_NUMBER = "|".join(sorted([*_UNITS, *_TENS], key=len, reverse=True))
# A run of number words: "fifteen", "twenty-five", "two hundred and fifty", "four five six seven".
_WORDS = re.compile(
    rf"\b(?:{_NUMBER}|{'|'.join(_SCALES)})(?:(?:[ -]|\s+and\s+)(?:{_NUMBER}|{'|'.join(_SCALES)}))*\b", re.IGNORECASE
)
_SPACED_DIGITS = re.compile(r"(?<![\d.,])\d(?: \d)+(?![\d.,])")
_SMALL = "|".join(_UNITS[:13])
_LARGE = "|".join([*_UNITS[13:], *_TENS, *_SCALES])
# What may change ASCII text, found in one Hyperscan pass (a fraction of a microsecond): digits spaced one by one,
# a number word beyond "twelve", two number words in a row. Most answers hold none.
_MAY_CHANGE = Prefilter({
    "spaced": re.compile(r"\d \d"),
    "large": re.compile(rf"\b(?:{_LARGE})\b", re.IGNORECASE),
    "run": re.compile(rf"\b(?:{_SMALL})[ -]+(?:{_SMALL}|{_LARGE})\b", re.IGNORECASE),
}, TEXT_PREFILTERS)  # fmt: skip


class Normal(NamedTuple):
    """The normal text and, per character of it, where it came from (None: the text as written)."""

    text: str
    starts: list[int] | None = None
    ends: list[int] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of the normal span [start, end)."""
        if self.starts is None or self.ends is None:
            return start, end
        if start >= len(self.starts):
            return (self.ends[-1], self.ends[-1]) if self.ends else (0, 0)
        return self.starts[start], self.ends[max(start, end - 1)]


def normal(text: str) -> Normal:
    """``text`` as every check reads it; see the module's docstring."""
    global _last
    if not text:
        return Normal(text)
    last = _last  # one read of the pair: another thread may replace it, never half of it
    if last[0] is text:
        return last[1]
    read = Normal(text) if text.isascii() and not _ascii_changes(text) else _normal(text)
    _last = (text, read)  # an answer's text is read by the enforced rules, then by the others: once
    return read


_last: tuple[str | None, Normal] = (None, Normal(""))  # the text read last (this very object) and its normal form


def _normal(text: str) -> Normal:
    chars, starts, ends = _characters(text)
    chars, starts, ends = _number_words(chars, starts, ends)
    chars, starts, ends = _joined_digits(chars, starts, ends)
    joined = "".join(chars)
    if joined == text:
        return Normal(text)
    return Normal(joined, starts, ends)


def _ascii_changes(text: str) -> bool:
    """Whether ASCII text has anything to normalise: spaced digits, or number words other than one of the
    single words read as written (most answers hold neither, or only an "on one side")."""
    if not _MAY_CHANGE.possible(text):
        return False
    if _SPACED_DIGITS.search(text) is not None:
        return True
    return any(_value(run.group()) is not None for run in _WORDS.finditer(text))


def normal_text(text: str) -> str:
    """Only the normal text (the caller's words, compared with what an answer repeats)."""
    return normal(text).text


def _characters(text: str) -> tuple[list[str], list[int], list[int]]:
    if text.isascii():  # nothing to fold character by character
        return list(text), list(range(len(text))), list(range(1, len(text) + 1))
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    folds = _confusables() if not text.isascii() else {}
    for i, c in enumerate(text):
        if c.isascii():
            chars.append(c)
            starts.append(i)
            ends.append(i + 1)
            continue
        if unicodedata.category(c) == "Cf":
            continue
        for n in unicodedata.normalize("NFKC", c):
            chars.append(folds.get(n, n))
            starts.append(i)
            ends.append(i + 1)
    return chars, starts, ends


def _number_words(chars: list[str], starts: list[int], ends: list[int]) -> tuple[list[str], list[int], list[int]]:
    text = "".join(chars)
    runs = list(_WORDS.finditer(text))
    if not runs:
        return chars, starts, ends
    out_c: list[str] = []
    out_s: list[int] = []
    out_e: list[int] = []
    position = 0
    for run in runs:
        digits = _value(run.group())
        if digits is None:
            continue
        out_c += chars[position : run.start()]
        out_s += starts[position : run.start()]
        out_e += ends[position : run.start()]
        origin = (starts[run.start()], ends[run.end() - 1])
        out_c += list(digits)
        out_s += [origin[0]] * len(digits)
        out_e += [origin[1]] * len(digits)
        position = run.end()
    out_c += chars[position:]
    out_s += starts[position:]
    out_e += ends[position:]
    return out_c, out_s, out_e


def _value(words: str) -> str | None:
    """The digits a run of number words stands for: one number ("two hundred and fifty"), or digits named one
    by one ("four five six"); None for a run that is neither ("hundred")."""
    plain = re.sub(r"[\s-]+", " ", words.lower()).strip()
    if plain in _AS_WRITTEN:
        return None
    try:
        return str(text2num(plain.replace(" and ", " "), "en"))
    except ValueError:
        pass
    parts = plain.split()
    if all(part in _DIGIT_WORDS for part in parts):
        return " ".join(_DIGIT_WORDS[part] for part in parts)
    return None


def _joined_digits(chars: list[str], starts: list[int], ends: list[int]) -> tuple[list[str], list[int], list[int]]:
    text = "".join(chars)
    drop = {m.start() + i for m in _SPACED_DIGITS.finditer(text) for i in range(1, m.end() - m.start(), 2)}
    if not drop:
        return chars, starts, ends
    keep = [i for i in range(len(chars)) if i not in drop]
    return [chars[i] for i in keep], [starts[i] for i in keep], [ends[i] for i in keep]


@cache
def _confusables() -> dict[str, str]:
    """Characters of other scripts drawn like an ASCII letter or digit, and that character (lower case kept as
    the table gives it). Read once, the first time a text is not ASCII."""
    data = orjson.loads(resources.files("confusable_homoglyphs").joinpath("confusables.json").read_bytes())
    folds: dict[str, str] = {}
    for char, glyphs in data.items():
        if len(char) != 1 or char.isascii():
            continue
        for glyph in glyphs:
            target = glyph.get("c", "")
            if len(target) == 1 and target.isascii() and target.isalnum():
                folds[char] = target
                break
    return folds
