"""Scanning text fast: a lower-cased copy at the same offsets, and the places where patterns can match.

Shared by the dangerous-instruction, red-flag and prompt-injection checks: each finds its trigger words
(needles) in one pass and runs its patterns only in windows around them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

# Folding for the lower-cased copy: one apostrophe, one kind of space within a line; every character maps to
# one, so offsets agree.
_FOLD = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00a0": " ", "\t": " "})


def fold(text: str) -> str:
    """The lower-cased text with one apostrophe and one kind of space, at the same offsets as ``text``."""
    folded = text.lower().translate(_FOLD)
    if len(folded) == len(text):
        return folded
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text).translate(_FOLD)  # "İ" lowers to two


class Needles:
    """Where patterns can match: the occurrences of their needles, word beginnings that every match holds, found
    in one regex pass. A pattern's pass costs up to a tenth of a microsecond per character; the needles' pass, a
    trie of all of them tried only where a word begins, a fraction of that. Most texts hold few needles, so most
    of a text never meets the patterns.

    ``needles``: key (a pattern's name) -> its needles. A needle is found where it starts a word (after anything
    but a letter: "old" in "6-week-old", "°" in "38°"). A lower-case needle is looked for in the folded text, any
    other (an acronym: "A&E", "DAN") as written. Every occurrence counts, also inside another needle's.
    """

    def __init__(self, needles: dict[str, tuple[str, ...]]) -> None:
        owners: dict[str, set[str]] = {}
        for key, words in needles.items():
            for word in words:
                owners.setdefault(word, set()).add(key)
        # A hit is the longest needle at its place; it counts for every needle it starts with.
        self.keys = {word: sorted({k for other in owners if word.startswith(other) for k in owners[other]})
                     for word in owners}  # fmt: skip
        lower = sorted(word for word in owners if word == word.lower())
        written = sorted(word for word in owners if word != word.lower())
        # Lookaheads, so that a needle inside another's occurrence is found too; acronyms as written.
        self.patterns: list[tuple[re.Pattern[str], bool]] = []
        for group, as_written, letter in ((lower, False, "a-z"), (written, True, "A-Za-z")):
            if group:
                self.patterns.append((re.compile(f"(?<![{letter}])(?=({_trie(group)}))"), as_written))

    def find(self, text: str, folded: str) -> dict[str, list[int]]:
        """key -> where its needles occur, in text order."""
        hits = [
            (m.start(), m.group(1))
            for p, as_written in self.patterns
            for m in p.finditer(text if as_written else folded)
        ]
        found: dict[str, list[int]] = {}
        for position, word in sorted(hits) if len(self.patterns) > 1 else hits:
            for key in self.keys[word]:
                found.setdefault(key, []).append(position)
        return found


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


def _trie(words: list[str]) -> str:
    """One pattern for ``words``, as a trie: at each character the engine follows one branch."""
    root: dict[str, dict[str, Any]] = {}
    for word in words:
        node = root
        for character in word:
            node = node.setdefault(character, {})
        node[""] = {}
    return _trie_node(root)


def _trie_node(node: dict[str, dict[str, Any]]) -> str:
    branches = [re.escape(character) + _trie_node(child) for character, child in node.items() if character]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    return f"(?:{body})?" if "" in node else body  # a word ends here and a longer one goes on
