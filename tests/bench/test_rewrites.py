"""bench/rewrites/independent.py: faithful rewrites of MEDEC's tuning notes keep every checkable fact, change most
notes, are deterministic, and change a note only sentence by sentence.
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Callable

import pytest

import corpora
from bench.rewrites.independent import CLINICAL, PLAIN, Rule, clinical_rewording, plain_words, preserved, segments

Generator = Callable[[str, int], str]
GENERATORS = pytest.mark.parametrize("generate", [clinical_rewording, plain_words], ids=lambda g: g.__name__)


def _tuning_rows() -> list[dict[str, str]]:
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(newline="", encoding="utf-8") as file:
        return [row for row in csv.DictReader(file) if corpora.half(row["Text ID"]) == "tuning"]


ROWS = _tuning_rows()
ERROR_ROWS = [row for row in ROWS if row["Corrected Text"] != "NA"]
NOTES = [row["Text"] for row in ROWS] + [row["Corrected Text"] for row in ERROR_ROWS]


def _pieces(text: str) -> list[str]:
    return [piece for piece, _ in segments(text)]


def test_the_tuning_half_has_notes_and_error_notes() -> None:
    assert len(ROWS) > 200 and len(ERROR_ROWS) > 100


@GENERATORS
@pytest.mark.parametrize("seed", [0, 7])
def test_every_rewrite_keeps_the_checkable_facts(generate: Generator, seed: int) -> None:
    broken = [note[:80] for note in NOTES if not preserved(note, generate(note, seed))]
    assert not broken


@GENERATORS
def test_most_notes_are_changed_and_lines_stay_lines(generate: Generator) -> None:
    rewrites = [(note, generate(note, 0)) for note in NOTES]
    assert sum(note != out for note, out in rewrites) >= 0.9 * len(NOTES)
    assert all(note.count("\n") == out.count("\n") for note, out in rewrites)


@GENERATORS
def test_rewrites_are_deterministic_and_follow_the_seed(generate: Generator) -> None:
    assert all(generate(note, 3) == generate(note, 3) for note in NOTES)
    assert sum(generate(note, 3) != generate(note, 4) for note in NOTES) > len(NOTES) // 4


@GENERATORS
def test_a_note_is_rewritten_sentence_by_sentence(generate: Generator) -> None:
    for note in NOTES[:60]:
        assert generate(note, 5) == "".join(generate(piece, 5) for piece in _pieces(note))


@GENERATORS
def test_the_two_versions_of_an_error_note_differ_only_where_the_sentence_differed(generate: Generator) -> None:
    for row in ERROR_ROWS:
        text, corrected = row["Text"], row["Corrected Text"]
        out_text, out_corrected = generate(text, 11), generate(corrected, 11)
        a, b = _pieces(text), _pieces(corrected)
        matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                continue
            same = generate("".join(a[i1:i2]), 11)
            assert same in out_text and same in out_corrected, row["Text ID"]
            if i1 == 0 and j1 == 0:
                assert out_text.startswith(same) and out_corrected.startswith(same), row["Text ID"]
            if i2 == len(a) and j2 == len(b):
                assert out_text.endswith(same) and out_corrected.endswith(same), row["Text ID"]
        assert (out_text == out_corrected) == (text == corrected)


def test_the_check_catches_changed_facts() -> None:
    note = "She denies fever. Her pulse is 106/min and the left knee is swollen. Culture shows Trichomonas vaginalis."
    assert preserved(
        note,
        "She reports no fever. Her HR is 106/min and the left knee is swollen. Culture shows Trichomonas vaginalis.",
    )
    assert not preserved(note, note.replace("106", "116"))
    assert not preserved(note, note.replace("denies", "reports"))
    assert not preserved(note, note.replace("left", "right"))
    assert not preserved(note, note.replace("Trichomonas", "Giardia"))


@pytest.mark.parametrize(("table", "least"), [(CLINICAL, 40), (PLAIN, 80)], ids=["clinical", "plain"])
def test_the_tables_are_large_and_bring_in_no_fact(table: tuple[Rule, ...], least: int) -> None:
    assert len(table) >= least
    for rule in table:
        for option in rule.options:
            assert not re.search(r"\d|\b(?:left|right)\b", option), option
