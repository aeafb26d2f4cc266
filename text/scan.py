"""Scanning text fast: a lower-cased copy at the same offsets, and the places where patterns can match.

Shared by the identifier recognisers (text/identifiers.py) and the dangerous-instruction, red-flag and
prompt-injection checks (policies/checks/): each finds its trigger words (needles) in one pass and runs its
patterns only in windows around them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import hyperscan

# Folding for the lower-cased copy: one apostrophe, one kind of space within a line; every character maps to
# one, so offsets agree.
_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00a0": " ", "\t": " "})


# Everything but a-z and digits becomes a space (the copy Needles looks for word beginnings in).
class _Spaced(dict[int, str]):
    def __missing__(self, code: int) -> str:
        return " "


_SPACED = _Spaced({ord(c): c for c in "abcdefghijklmnopqrstuvwxyz0123456789"})
_SPACED_ASCII = bytes(_SPACED[code].encode()[0] for code in range(256) if code < 128) + bytes(128)


def spaced(folded: str) -> bytes:
    """A space, then ``folded`` with everything but a-z and digits turned into spaces, as ASCII bytes (same
    offsets, plus one)."""
    if folded.isascii():  # the common case: a byte table, without a call per character
        return b" " + folded.encode().translate(_SPACED_ASCII)
    return (" " + folded.translate(_SPACED)).encode()


_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")  # what the spaced copy keeps
FEW = 2  # at most this many needles (of letters and digits) are looked for by str.find rather than Hyperscan


def fold(text: str) -> str:
    """The lower-cased text with one apostrophe and one kind of space, at the same offsets as ``text``."""
    if text.isascii():  # the common case: only tabs to fold, without a call per character
        return text.lower().replace("\t", " ")
    folded = text.lower().translate(_FOLD)
    if len(folded) == len(text):
        return folded
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text).translate(_FOLD)  # "İ" lowers to two


class Needles:
    """Where patterns can match: the occurrences of their needles, word beginnings that every match holds. One
    Hyperscan pass (literal matching in C, a fraction of a nanosecond a character) finds them all at once, where
    a pattern's own pass costs up to a tenth of a microsecond a character. Most texts hold few needles, so most
    of a text never meets the patterns.

    ``needles``: key (a pattern's name) -> its needles. A needle is found where it starts a word (after anything
    but an ASCII letter: "old" in "6-week-old", "°" in "38°"). A lower-case needle is looked for in the folded
    text, any other (an acronym: "A&E", "DAN") as written. Every occurrence counts, also inside another needle's.

    A needle that opens with a letter is looked for in lower case, with one space before it, in ``spaced(folded)``
    (everything but a-z and digits a space, a space first): only its occurrences at a word beginning are
    reported, so common short needles ("ate", "old") cost nothing inside other words; one written otherwise
    ("Mr", "A&E") is then checked as written. The copy turns a lower-case needle's own punctuation into spaces
    ("epi-pen" is looked for as "epi pen"), so it may report a few places the needle is not: windows around them
    only cost a pattern pass, never a miss. The few others ("°", "38", "1-800") are looked for one by one, and so
    are at most FEW needles of lower-case letters and digits when they are all there is ("chest"): then with
    str.find on the folded text, at the same word beginnings, without the copy.
    """

    def __init__(self, needles: dict[str, tuple[str, ...]], group: PrefilterGroup | None = None) -> None:
        self.needles = needles
        owners: dict[str, set[str]] = {}
        for key, words in needles.items():
            for word in words:
                owners.setdefault(word, set()).add(key)
        # Needles that open with a letter, as entries of the spaced copy; per entry: its length and, per needle
        # it stands for, the needle as written (None: lower case, no check) and its keys.
        spaced_entries: dict[str, list[tuple[str | None, tuple[str, ...]]]] = {}
        self.other: list[tuple[str, bool, tuple[str, ...]]] = []  # (needle, as written, keys)
        for word, keys in sorted(owners.items()):
            as_written = word != word.lower()
            if "a" <= word[0].lower() <= "z":
                entry = " " + word.lower().translate(_SPACED)
                spaced_entries.setdefault(entry, []).append((word if as_written else None, tuple(sorted(keys))))
            else:
                self.other.append((word, as_written, tuple(sorted(keys))))
        self.entries = [(len(entry), tuple(forms)) for entry, forms in spaced_entries.items()]
        # One or two needles of letters and digits alone, in lower case: a find on the folded text costs less than
        # making the copy and a Hyperscan pass ("chest").
        few = len(spaced_entries) <= FEW and all(
            entry[1:].isalnum() and entry.isascii() and forms == [(None, forms[0][1])]
            for entry, forms in spaced_entries.items()
        )
        self.plain = [(entry[1:], forms[0][1]) for entry, forms in spaced_entries.items()] if few else []
        self.literals = _Literals(list(spaced_entries)) if spaced_entries and not few else None
        # With a group: whether any needle can occur at all, from the group's one pass over the text (``find``
        # returns at once when none can).
        self.gate = Prefilter({"any": _gate(list(owners))}, group) if group is not None else None

    @property
    def reads_copy(self) -> bool:
        """Whether ``find`` reads ``spaced(folded)`` (and makes it, unless given)."""
        return self.literals is not None

    def find(self, text: str, folded: str, copy: bytes | None = None) -> dict[str, list[int]]:
        """key -> where its needles occur, in text order. ``copy``: ``spaced(folded)``, when the caller has it."""
        if self.gate is not None and self.gate.possible(text) == set():
            return {}
        hits = self._spaced_hits(text, folded, copy) + self._plain_hits(folded) + self._other_hits(text, folded)
        found: dict[str, list[int]] = {}
        hits.sort(key=lambda hit: hit[0])
        for position, keys in hits:
            for key in keys:
                positions = found.setdefault(key, [])
                if not positions or positions[-1] != position:
                    positions.append(position)
        return found

    def _spaced_hits(self, text: str, folded: str, copy: bytes | None) -> list[tuple[int, tuple[str, ...]]]:
        hits: list[tuple[int, tuple[str, ...]]] = []
        if self.literals is None:
            return hits
        for index, end in self.literals.scan(spaced(folded) if copy is None else copy):
            length, forms = self.entries[index]
            start = end - length  # in the text: the copy has one character more, the entry too
            for written, keys in forms:
                if written is None or text.startswith(written, start):
                    hits.append((start, keys))
        return hits

    def _plain_hits(self, folded: str) -> list[tuple[int, tuple[str, ...]]]:
        return [(start, keys) for word, keys in self.plain for start in _found(folded, word, _ALNUM)]

    def _other_hits(self, text: str, folded: str) -> list[tuple[int, tuple[str, ...]]]:
        return [(start, keys) for word, as_written, keys in self.other
                for start in _found(text if as_written else folded, word, _LETTERS)]  # fmt: skip


def _found(searched: str, word: str, within: frozenset[str]) -> Iterator[int]:
    """Where ``word`` occurs in ``searched`` other than right after a character of ``within`` (inside a word)."""
    start = searched.find(word)
    while start >= 0:
        if start == 0 or searched[start - 1] not in within:
            yield start
        start = searched.find(word, start + 1)


def _gate(needles: list[str]) -> re.Pattern[str]:
    """A pattern that matches wherever one of ``needles`` can be found (and in some other places): without case,
    any character but a letter or digit standing for one in the needle (the spaced copy's rule)."""

    def loose(needle: str) -> str:
        return "".join(re.escape(c) if c.isalnum() else "[^A-Za-z0-9]" for c in needle)

    return re.compile("|".join(loose(needle) for needle in sorted(needles)), re.IGNORECASE)


class _Literals:
    """Every occurrence of a set of byte strings, by one Hyperscan pass."""

    def __init__(self, literals: list[str]) -> None:
        self.database = _database([re.escape(literal).encode() for literal in literals], [0] * len(literals))
        self._local = threading.local()  # a scan writes to its scratch space: one per thread

    def scan(self, data: bytes) -> list[tuple[int, int]]:
        """(index of the literal, where it ends) for every occurrence, in no set order."""
        found: list[tuple[int, int]] = []

        def hit(index: int, start: int, end: int, flags: int, context: object) -> bool:
            found.append((index, end))
            return False  # go on: every occurrence

        self.database.scan(data, match_event_handler=hit, scratch=_scratch(self._local, self.database))
        return found


def _database(expressions: list[bytes], flags: list[int]) -> hyperscan.Database:
    """A block-mode database of ``expressions``, each reported by its index."""
    database = hyperscan.Database()
    database.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    return database


def _scratch(local: threading.local, database: hyperscan.Database) -> hyperscan.Scratch:
    scratch = getattr(local, "scratch", None)
    if scratch is None:
        scratch = local.scratch = hyperscan.Scratch(database)
    return scratch


def windows(positions: list[int], length: int, reach: tuple[int, int]) -> Iterator[tuple[int, int]]:
    """From ``reach[0]`` characters before each position (in order) to ``reach[1]`` after it, overlaps merged."""
    before, after = reach
    window: tuple[int, int] | None = None
    for i in positions:
        start, end = max(0, i - before), min(length, i + after)
        if window is not None and start <= window[1]:
            window = (window[0], max(window[1], end))
            continue
        if window is not None:
            yield window
        window = (start, end)
    if window is not None:
        yield window


class Prefilter:
    """Which of a set of regular expressions may match somewhere in a text: one Hyperscan pass of all of them,
    compiled in prefilter mode (each matches wherever its expression does, and in some places it does not), over
    the text's bytes: a few microseconds for a page, where trying each expression in Python costs tens. A pattern
    it leaves out cannot match, so it need not run. Only for ASCII text, where the bytes' offsets and the
    expressions' classes (digits, word characters, case) are the same as Python's; ``possible`` is None otherwise.

    Prefilters made with one ``group`` share its database: ``group.scan(text)`` answers for all of them in one
    pass, and ``of`` reads one's answer from it.
    """

    def __init__(self, patterns: dict[str, re.Pattern[str]], group: PrefilterGroup | None = None) -> None:
        self.keys = list(patterns)
        self.patterns = patterns
        self.group = PrefilterGroup() if group is None else group
        self._member = self.group.add(self)
        if group is None:
            self.group.compile()

    def possible(self, text: str) -> set[str] | None:
        return self.of(self.group.scan(text))

    def of(self, found: list[set[str]] | None) -> set[str] | None:
        """This prefilter's answer from its group's ``scan``."""
        return None if found is None else found[self._member]


class PrefilterGroup:
    """Prefilters compiled into one Hyperscan database, when the first text is scanned or ``compile`` is called
    (a prefilter made without a group has one of its own, compiled at once). ``folded``: the texts scanned are
    folded (``fold``: lower case, tabs as spaces), so every pattern, case-sensitive parts (``(?-i:AI)``) included,
    is matched without case."""

    def __init__(self, folded: bool = False) -> None:
        self.members: list[Prefilter] = []
        self.folded = folded
        self._database: hyperscan.Database | None = None
        self._lock = threading.Lock()
        self._last: tuple[str | None, list[set[str]] | None] = (None, None)

    def add(self, member: Prefilter) -> int:
        """Adds ``member`` (compiled with the group's next ``compile``); returns its index."""
        with self._lock:
            self.members.append(member)
            self._database = None
            self._last = (None, None)
            return len(self.members) - 1

    def compile(self) -> hyperscan.Database:
        """The group's database, compiled now unless it holds every member already."""
        with self._lock:
            if self._database is None:
                patterns = [(index, key, m.patterns[key]) for index, m in enumerate(self.members) for key in m.keys]
                expressions = [pattern.pattern for _, _, pattern in patterns]
                flags = [_hyperscan_flags(pattern) for _, _, pattern in patterns]
                if self.folded:
                    expressions = [_CASE_SENSITIVE.sub("(?:", expression) for expression in expressions]
                    flags = [flag | hyperscan.HS_FLAG_CASELESS for flag in flags]
                self._owners = [(index, key) for index, key, _ in patterns]
                self._local = threading.local()  # a scan writes to its scratch space: one per thread and database
                self._database = _database([_bytes_pattern(expression) for expression in expressions], flags)
            return self._database

    def scan(self, text: str) -> list[set[str]] | None:
        """Per member, the keys of its patterns that may match in ``text``; None when it is not ASCII. The last
        text's answer is remembered: the checks that read one text ask one after the other (read, never change
        what it returns)."""
        last = self._last  # one read of the pair: another thread may replace it, never half of it
        if last[0] is text:
            return last[1]
        if not text.isascii():
            return None
        database = self._database if self._database is not None else self.compile()
        found: list[set[str]] = [set() for _ in self.members]
        owners = self._owners

        def hit(index: int, start: int, end: int, flags: int, context: object) -> bool:
            member, key = owners[index]
            found[member].add(key)
            return False  # go on: the other patterns

        database.scan(text.encode(), match_event_handler=hit, scratch=_scratch(self._local, database))
        self._last = (text, found)
        return found


# The prefilters of what reads an answer's text (normalisation, the identifiers, refusals, the needles of the
# dose and instruction checks): one Hyperscan pass over a text serves them all.
TEXT_PREFILTERS = PrefilterGroup()

_CASE_SENSITIVE = re.compile(r"(?<!\\)\(\?-i:")
_OUTSIDE_ASCII = re.compile(r"(?<!\\)\\u([0-9a-fA-F]{4})|[^\x00-\x7f]")


def _bytes_pattern(pattern: str) -> bytes:
    """The pattern for Hyperscan, which reads bytes and knows no ``\\u`` escape. It runs on ASCII texts only, in
    which a character outside ASCII never occurs: each (written, or as a ``\\u`` escape) becomes byte 0xFF, which
    does not occur either; one inside ASCII written as ``\\u`` becomes ``\\x``."""

    def byte(m: re.Match[str]) -> str:
        code = int(m.group(1), 16) if m.group(1) else 0xFF
        return f"\\x{min(code, 0xFF):02x}"

    return _OUTSIDE_ASCII.sub(byte, pattern).encode()


def _hyperscan_flags(pattern: re.Pattern[str]) -> int:
    flags = pattern.flags
    out = hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH
    if flags & re.IGNORECASE:
        out |= hyperscan.HS_FLAG_CASELESS
    if flags & re.MULTILINE:
        out |= hyperscan.HS_FLAG_MULTILINE
    if flags & re.DOTALL:
        out |= hyperscan.HS_FLAG_DOTALL
    if flags & re.VERBOSE:
        raise ValueError("verbose patterns are not prefiltered")
    return out
