"""CefLiteJudge: fact extraction, the three CEF scores on faithful and corrupted summaries, and applicability."""

from __future__ import annotations

from typing import Any

import pytest

from judges.fidelity.facts import Fact, extract
from judges.fidelity.lite import CefLiteJudge, score
from judges.sample import Choice, Response, Result, Sample

NOTE = (
    "72 year-old woman with a history of hypertension and diabetes presented to the emergency department "
    "with swelling of the left knee. She denies chest pain and fever. K 3.1, BP 150/90. "
    "Started furosemide 40 mg twice daily. Urine culture grew Escherichia coli."
)
FAITHFUL = (
    "72 yo pt w/ h/o HTN and DM seen in ED for L knee swelling. No CP, no fever. "
    "K 3.1 and BP 150/90. Furosemide 40 mg b.i.d. started. Urine culture: E. coli."
)


def sample(output: str, user: str | None = None, **request: Any) -> Sample:
    messages = [{"role": "system", "content": "You are a careful clinical assistant."}]
    if user is not None:
        messages.append({"role": "user", "content": user})
    return Sample(
        request_id="r1",
        model="m",
        request={"messages": messages, **request},
        response=Response(choices=[Choice(content=output)]),
    )


def by_indicator(results: list[Result]) -> dict[str, Result]:
    return {r.indicator: r for r in results}


def judged(candidate: str, source: str = NOTE) -> dict[str, Result]:
    return by_indicator(CefLiteJudge().judge(sample(candidate, f"Summarise the following note:\n{source}")))


def test_extracts_clinical_facts_with_abbreviations_and_negation() -> None:
    facts = {(f.kind, f.key, f.value, f.negated) for f in extract(FAITHFUL)}
    assert ("dose", "furosemide", "40 mg", False) in facts
    assert ("frequency", "furosemide", "bid", False) in facts
    assert ("finding", "chest pain", "present", True) in facts
    assert ("diagnosis", "hypertension", "present", False) in facts
    assert ("laterality", "knee", "left", False) in facts
    assert ("lab", "k", "3.1", False) in facts
    assert ("lab", "bp", "150/90", False) in facts
    assert ("organism", "escherichia coli", "present", False) in facts
    assert ("age", "age", "72", False) in facts


def test_negation_stays_in_its_clause_and_left_as_a_verb_is_no_side() -> None:
    facts = {(f.kind, f.key, f.negated) for f in extract("No fever but chest pain today. She left the clinic.")}
    assert ("finding", "fever", True) in facts
    assert ("finding", "chest pain", False) in facts
    assert not [f for f in extract("She left the clinic.") if f.kind == "laterality"]


def test_drug_suffixes_and_dates_are_detected() -> None:
    facts = extract("Switched to apixaban on 2024-03-01; continue atorvastatin and lisinopril.")
    drugs = {f.key for f in facts if f.kind == "drug"}
    assert drugs == {"apixaban", "atorvastatin", "lisinopril"}
    assert Fact("date", "date", "2024-03-01", False, 0) in facts


def test_faithful_paraphrase_with_abbreviations_scores_high() -> None:
    results = judged(FAITHFUL)
    for indicator in ("fidelity_coverage", "fidelity_conformity", "fidelity_consistency"):
        result = results[indicator]
        assert result.score is not None and result.score >= 0.9, (indicator, result.evidence)
        assert result.method == "cef-lite/1"


# Four facts (side, drug, dose, negated finding): one error costs 1/4. CEF scores are shares, so in a note with
# N facts one contradiction costs 1/N; test_one_error_in_a_long_note_still_shows covers the long case.
SHORT_NOTE = "Left leg: furosemide 40 mg. No chest pain."


@pytest.mark.parametrize(
    ("candidate", "kind", "key"),
    [
        ("Left leg: furosemide 400 mg. No chest pain.", "dose", "furosemide"),
        ("Left leg: furosemide 40 mg. Chest pain.", "finding", "chest pain"),
        ("Right leg: furosemide 40 mg. No chest pain.", "laterality", "leg"),
    ],
)
def test_contradiction_lowers_conformity_and_consistency(candidate: str, kind: str, key: str) -> None:
    results = judged(candidate, SHORT_NOTE)
    conformity = results["fidelity_conformity"]
    assert conformity.score is not None and conformity.score < 0.8
    consistency = results["fidelity_consistency"].score
    assert consistency is not None and consistency < 0.8
    assert [(e["kind"], e["key"]) for e in conformity.evidence] == [(kind, key)]


def test_one_error_in_a_long_note_still_shows() -> None:
    results = judged(FAITHFUL.replace("40 mg", "400 mg"))
    conformity = results["fidelity_conformity"]
    assert conformity.score is not None and conformity.score < 1.0
    assert [(e["key"], e["value"], e["other"]) for e in conformity.evidence] == [("furosemide", "40 mg", "400 mg")]


def test_faithful_short_note_is_not_penalised() -> None:
    results = judged("Pt denies CP. Furosemide 40 mg given for the L leg.", SHORT_NOTE)
    assert {r.indicator: r.score for r in results.values()} == {
        "fidelity_coverage": 1.0,
        "fidelity_conformity": 1.0,
        "fidelity_consistency": 1.0,
    }


def test_substituted_drug_lowers_consistency_and_names_the_drug() -> None:
    results = judged("Left leg: torsemide 40 mg. No chest pain.", SHORT_NOTE)
    consistency = results["fidelity_consistency"]
    assert consistency.score is not None and consistency.score < 0.8
    assert {"mismatch": "unsupported", "kind": "drug", "key": "torsemide", "value": "present", "other": None} in (
        consistency.evidence
    )
    assert any(e["key"] == "furosemide" for e in results["fidelity_coverage"].evidence)


def test_omitted_fact_lowers_coverage_only() -> None:
    results = judged("Left leg: furosemide 40 mg.", SHORT_NOTE)
    coverage = results["fidelity_coverage"]
    assert coverage.score is not None and coverage.score < 1.0
    assert results["fidelity_conformity"].score == 1.0
    assert results["fidelity_consistency"].score == 1.0
    assert coverage.evidence == [
        {"mismatch": "omitted", "kind": "finding", "key": "chest pain", "value": "no present", "other": None}
    ]


def test_evidence_is_facts_not_sentences() -> None:
    results = judged("Left leg: furosemide 400 mg. No chest pain.", SHORT_NOTE)
    evidence = results["fidelity_conformity"].evidence
    assert evidence == [
        {"mismatch": "contradicted", "kind": "dose", "key": "furosemide", "value": "40 mg", "other": "400 mg"}
    ]
    assert all(len(str(v)) < 40 for e in evidence for v in e.values())


def test_open_question_is_not_applicable() -> None:
    judge = CefLiteJudge()
    open_question = sample("Metformin is first line for type 2 diabetes.", "What is first line for diabetes?")
    assert not judge.applies(open_question)
    results = judge.judge(open_question)
    assert [r.score for r in results] == [None, None, None]
    assert {r.label for r in results} == {"not_applicable"}


def test_system_prompt_alone_is_no_source() -> None:
    long_system = sample("Furosemide 40 mg.", None)
    long_system.request["messages"][0]["content"] = NOTE
    assert not CefLiteJudge().applies(long_system)


def test_sources_from_long_messages_fences_and_tools() -> None:
    judge = CefLiteJudge()
    assert judge.applies(sample("ok", " ".join(["word"] * 45)))
    assert judge.applies(sample("ok", f"Tidy this up:\n```\n{SHORT_NOTE}\n```"))
    tool = sample("ok", "What did the lab say?")
    tool.request["messages"].append({"role": "tool", "content": "K 3.1"})
    assert judge.applies(tool)


def test_reasoning_blocks_are_not_the_candidate() -> None:
    output = "<think>maybe 400 mg of torsemide</think>Left leg: furosemide 40 mg. No chest pain."
    results = judged(output, SHORT_NOTE)
    assert [r.score for r in results.values()] == [1.0, 1.0, 1.0]


def test_no_candidate_facts_makes_consistency_null() -> None:
    results = score(SHORT_NOTE, "Please see the note.")
    assert results.consistency is None
    assert results.coverage == 0.0


async def test_evaluate_returns_three_results_per_sample() -> None:
    judge = CefLiteJudge()
    samples = [sample(FAITHFUL, f"Note: {NOTE}"), sample("Hello.", "Hi")]
    results = await judge.evaluate(samples)
    assert [len(r) for r in results] == [3, 3]
    assert results[1][0].score is None
    assert (judge.name, judge.method, judge.batch_size) == ("cef-lite", "cef-lite/1", 32)
