"""cef-cascade's rule: a finding the judge model overrules counts as uncertain; one it upholds still counts.

The model-facing path (the closed question, its answer read from log-probabilities) runs against the real engine
in tests/realmodel/test_local_engine.py; here the decisions are given, to pin down what they do to the scores."""

from __future__ import annotations

import pytest

from judges.fidelity import cascade, cef, lite
from judges.fidelity.task import Task
from judges.fidelity.text import statements

SOURCE = "Blood cultures grew Mycoplasma pneumoniae. She was started on azithromycin. She denies chest pain."
CANDIDATE = "Blood cultures grew Streptococcus pneumoniae. She was started on azithromycin. She denies chest pain."


def judged(decision: dict[str, object] | None) -> cef.Scores:
    source, candidate = statements(SOURCE), statements(CANDIDATE)
    alignments, sure = lite.aligned(source, candidate)
    (accused,) = [a for a in alignments if a.unsupported and sure[id(a)] >= lite.CONFIDENT]
    decided = {id(accused): decision} if decision is not None else {}
    questions = lite.questions_of(source, alignments, sure, decided)
    return cef.scores(Task("transform", SOURCE, CANDIDATE, True), *questions, lite.CONFIDENT)


def test_without_a_judge_model_the_substitution_counts_as_cef_lite_finds_it() -> None:
    found = judged(None)
    assert found.conformity == found.consistency == pytest.approx(2 / 3)
    assert [c.get("certain", True) for c in found.contradicted] == [True]


def test_a_finding_the_model_upholds_counts_and_says_so() -> None:
    found = judged({"decided_by": "cef-lite and judge model", "same_facts": 0.04, "overruled": False})
    assert found.conformity == pytest.approx(2 / 3)
    (record,) = found.contradicted
    assert record["same_facts"] == 0.04 and record["decided_by"] == "cef-lite and judge model"
    assert record.get("certain", True) is True


def test_a_finding_the_model_overrules_lowers_no_score_and_is_listed_as_uncertain() -> None:
    found = judged({"decided_by": "judge model", "same_facts": 0.9, "overruled": True})
    assert found.conformity == found.consistency == 1.0
    (record,) = found.contradicted
    assert record["certain"] is False and record["decided_by"] == "judge model"
    assert [u["certain"] for u in found.unsupported] == [False]


def test_the_model_reads_an_unaligned_sentence_against_the_source_sentences_sharing_its_words() -> None:
    source = statements("Lymph nodes are not enlarged. The abdomen is soft. Heart sounds are normal.")
    (sentence,) = statements("There is no swelling of the lymph nodes.")
    alignment = lite.align(sentence, source)
    assert alignment.source == ()  # every word of it is negated, none of the source's is: nothing aligns
    assert cascade.context(alignment, source) == "Lymph nodes are not enlarged."
