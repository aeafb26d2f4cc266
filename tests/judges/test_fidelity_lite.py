"""cef-lite: clinical terms and negation, sentence alignment, the CEF scores on faithful and corrupted notes."""

from __future__ import annotations

from typing import Any

import pytest

from judges.fidelity.lite import CefLiteJudge, score
from judges.fidelity.task import classify
from judges.fidelity.text import statements
from judges.judge import uncertain
from pipeline.sample import Choice, Response, Result, Sample

NOTE = (
    "72 year-old woman with a history of hypertension and diabetes presented to the emergency department "
    "with swelling of the left knee. She denies chest pain and fever. K 3.1, BP 150/90. "
    "Started furosemide 40 mg twice daily. Urine culture grew Escherichia coli."
)
# The same facts as clinicians write them: abbreviations, a merged sentence, reordered clauses.
FAITHFUL = (
    "72 yo pt w/ h/o HTN and DM presented to ED with swelling of the L knee. K 3.1, BP 150/90. "
    "She denies CP and fever. Started furosemide 40 mg b.i.d.; urine culture grew E. coli."
)


def sample(output: str, user: str | None = None, task: Any = None, **request: Any) -> Sample:
    messages = [{"role": "system", "content": "You are a careful clinical assistant."}]
    if user is not None:
        messages.append({"role": "user", "content": user})
    return Sample(
        request_id="r1",
        model="m",
        task=task,
        request={"messages": messages, **request},
        response=Response(choices=[Choice(content=output)]),
    )


def judged(candidate: str, source: str = NOTE) -> dict[str, Result]:
    results = CefLiteJudge().judge(sample(candidate, f"Summarise the following note:\n{source}"))
    return {r.indicator: r for r in results}


def scores(results: dict[str, Result]) -> tuple[float | None, ...]:
    return tuple(results[f"fidelity_{n}"].score for n in ("coverage", "conformity", "consistency"))


def test_terms_expand_abbreviations_and_carry_negation() -> None:
    (first,) = statements("Pt w/o CP; denies fever, has cough. Pneumonia was ruled out.")[:1]
    assert {"no:chest", "no:pain", "no:fever"} <= first.terms
    assert "cough" in first.terms or "no:cough" in first.terms
    second = statements("Pt w/o CP; denies fever, has cough. Pneumonia was ruled out.")[1]
    assert "no:pneumonia" in second.terms
    assert statements("Patient without chest pain.")[0].terms == statements("pt w/o CP.")[0].terms


def test_negation_scope_ends_at_a_clause_break() -> None:
    (only,) = statements("No fever but chest pain today.")
    assert {"no:fever", "chest", "pain"} <= only.terms


def test_numbers_keep_their_value_and_sides_their_side() -> None:
    (only,) = statements("Furosemide 40.0 mg for the L knee, K 3.10.")
    assert {"40", "mg", "left", "knee", "potassium", "3.1"} <= only.terms


def test_faithful_rewrite_with_abbreviations_and_merged_sentences_scores_one() -> None:
    results = judged(FAITHFUL)
    assert scores(results) == (1.0, 1.0, 1.0)
    assert results["fidelity_conformity"].method == "cef-lite/3"
    assert results["fidelity_conformity"].label == "transform"


@pytest.mark.parametrize(
    ("old", "new", "source_words", "candidate_words"),
    [
        ("40 mg", "400 mg", ["40"], ["400"]),  # wrong number
        ("L knee", "R knee", ["left"], ["right"]),  # wrong side
        ("denies CP and", "has CP and denies", ["no chest", "no pain"], ["chest", "pain"]),  # flipped negation
        ("E. coli", "Klebsiella", ["escherichia", "coli"], ["klebsiella"]),  # substituted organism
    ],
)
def test_a_substitution_is_a_contradiction(
    old: str, new: str, source_words: list[str], candidate_words: list[str]
) -> None:
    results = judged(FAITHFUL.replace(old, new))
    _, conformity, consistency = scores(results)
    assert conformity is not None and conformity < 1.0
    assert consistency is not None and consistency < 1.0
    (contradicted,) = results["fidelity_conformity"].evidence
    assert contradicted["mismatch"] == "contradicted"
    assert set(source_words) <= set(contradicted["terms"])
    assert set(candidate_words) <= set(contradicted["instead"])


def test_an_added_claim_is_unsupported_not_a_contradiction() -> None:
    results = judged(FAITHFUL + " Started on vancomycin for MRSA.")
    assert scores(results) == (1.0, 1.0, 0.8)
    (unsupported,) = results["fidelity_consistency"].evidence
    assert unsupported["on_source"] == "IDK"
    assert {"vancomycin", "mrsa"} <= set(unsupported["terms"])


def test_an_omission_lowers_coverage_only() -> None:
    results = judged("K 3.1, BP 150/90. Started furosemide 40 mg twice daily.")
    coverage, conformity, consistency = scores(results)
    assert coverage == pytest.approx(2 / 5)
    assert (conformity, consistency) == (1.0, 1.0)
    assert [e["question"] for e in results["fidelity_coverage"].evidence] == [
        "source sentence 1", "source sentence 2", "source sentence 5",
    ]  # fmt: skip


def test_one_error_in_a_long_note_still_shows() -> None:
    long_note = " ".join([NOTE] * 6)
    results = judged(long_note.replace("Escherichia coli", "Proteus mirabilis", 1), long_note)
    conformity = results["fidelity_conformity"].score
    assert conformity is not None and 0.9 < conformity < 1.0


def test_conciseness_is_the_share_of_words_saved() -> None:
    results = judged("Knee swelling.")
    assert results["fidelity_conciseness"].score == pytest.approx((len(NOTE.split()) - 2) / len(NOTE.split()))


def test_evidence_is_terms_and_question_numbers_not_sentences() -> None:
    results = judged(FAITHFUL.replace("40 mg", "400 mg"))
    for result in results.values():
        for record in result.evidence:
            assert set(record) <= {"mismatch", "question", "on_source", "on_candidate", "terms", "instead",
                                   "instead_of"}  # fmt: skip
            assert all(len(word) < 30 for key in ("terms", "instead", "instead_of") for word in record.get(key, []))


def test_open_question_is_not_applicable() -> None:
    judge = CefLiteJudge()
    open_question = sample("Metformin is first line for type 2 diabetes.", "What is first line for diabetes?")
    assert not judge.applies(open_question)
    results = judge.judge(open_question)
    assert [r.score for r in results] == [None, None, None, None]
    assert {r.label for r in results} == {"not_applicable"}


def test_grounded_question_scores_conformity_and_consistency_but_not_coverage() -> None:
    question = sample("Started furosemide 40 mg twice daily.", f"Context: {NOTE}\n\nWhat diuretic was started?")
    results = {r.indicator: r for r in CefLiteJudge().judge(question)}
    assert results["fidelity_coverage"].score is None
    assert results["fidelity_coverage"].label == "not_applicable"
    assert results["fidelity_conformity"].score == 1.0
    assert results["fidelity_consistency"].score == 1.0
    assert results["fidelity_consistency"].label == "grounded_qa"


def test_the_stated_task_overrides_the_inferred_one() -> None:
    inferred = sample(FAITHFUL, f"Anything to add?\nContext: {NOTE}")
    stated = sample(FAITHFUL, f"Anything to add?\nContext: {NOTE}", task="transform")
    assert {r.indicator: r.score for r in CefLiteJudge().judge(inferred)}["fidelity_coverage"] is None
    assert {r.indicator: r.score for r in CefLiteJudge().judge(stated)}["fidelity_coverage"] == 1.0
    assert not CefLiteJudge().applies(sample(FAITHFUL, f"Context: {NOTE}", task="open"))


def test_system_prompt_alone_is_no_source() -> None:
    long_system = sample("Furosemide 40 mg.", None)
    long_system.request["messages"][0]["content"] = NOTE
    assert not CefLiteJudge().applies(long_system)


def test_sources_from_long_messages_fences_and_tools() -> None:
    judge = CefLiteJudge()
    assert judge.applies(sample("ok", " ".join(["word"] * 45)))
    assert judge.applies(sample("ok", f"Tidy this up:\n```\n{NOTE}\n```"))
    tool = sample("ok", "What did the lab say?")
    tool.request["messages"].append({"role": "tool", "content": "K 3.1"})
    assert judge.applies(tool)


def test_reasoning_blocks_are_not_the_candidate() -> None:
    results = judged(f"<think>maybe 400 mg of torsemide</think>{FAITHFUL}")
    assert scores(results) == (1.0, 1.0, 1.0)


def test_a_candidate_without_content_terms_makes_consistency_null() -> None:
    results = judged("Please see the note.")
    assert results["fidelity_consistency"].score is None
    assert results["fidelity_consistency"].label == "not_computable"
    assert results["fidelity_coverage"].score == 0.0


async def test_evaluate_returns_four_results_per_sample() -> None:
    judge = CefLiteJudge()
    samples = [sample(FAITHFUL, f"Note: {NOTE}"), sample("Hello.", "Hi")]
    results = await judge.evaluate(samples)
    assert [len(r) for r in results] == [4, 4]
    assert results[1][0].score is None
    assert (judge.name, judge.method, judge.batch_size) == ("cef-lite", "cef-lite/3", 32)


def test_a_new_clause_after_a_comma_ends_the_negation_but_a_list_does_not() -> None:
    (merged,) = statements("No guarding or rebound, and colonoscopy showed cobblestone mucosa.")
    assert {"no:guard", "no:rebound", "colonoscopi", "cobbleston"} <= merged.terms
    (listed,) = statements("No fever, chills, and night sweats.")
    assert {"no:fever", "no:chill", "no:night", "no:sweat"} <= listed.terms


def test_the_source_starts_after_the_last_of_consecutive_markers() -> None:
    from judges.fidelity.task import source_text

    note = "Summarise the following note for the handover.\n\nNote:\nFever and cough for 3 days."
    assert source_text(sample("ok", note)) == "\nFever and cough for 3 days."
    quoted = f'Note: He said "{"x " * 50}" and left.'
    assert source_text(sample("ok", quoted)).startswith(" He said")


# Faithful restatements in other words, each a pair that read as a contradiction or an unsupported claim before
# findings carried a confidence (cef-lite/3). Such a pair must never lower a score: at most an uncertain finding.
SYNONYMS = [
    ("She has hypertension.", "She has high blood pressure."),
    ("He had a myocardial infarction in 2019.", "He had a heart attack in 2019."),
    ("The patient reports dyspnea on exertion.", "The patient reports trouble breathing on exertion."),
    ("She was afebrile on admission.", "She had no fever on admission."),
    ("Oral amoxicillin was started.", "Amoxicillin by mouth was started."),
    # Known limits: plain words that are themselves uncommon in English ("swelling", "fainting") read as specific.
    pytest.param(
        "Physical examination reveals bilateral pedal edema.",
        "On examination there is swelling of feet.",
        marks=pytest.mark.xfail(strict=True, reason="'swelling' is as rare in English as a clinical term"),
    ),
    pytest.param(
        "He presents with syncope after standing.",
        "He comes in after fainting on standing up.",
        marks=pytest.mark.xfail(strict=True, reason="'fainting' is as rare in English as a clinical term"),
    ),
]


@pytest.mark.parametrize(("source", "candidate"), SYNONYMS)
def test_a_restatement_in_common_words_is_uncertain_and_lowers_no_score(source: str, candidate: str) -> None:
    results = judged(candidate, source)
    assert results["fidelity_conformity"].score in (1.0, None)
    assert results["fidelity_consistency"].score in (1.0, None)
    findings = results["fidelity_conformity"].evidence + results["fidelity_consistency"].evidence
    assert all(item["certain"] is False and item["confidence"] < 0.5 for item in findings)


@pytest.mark.parametrize(
    ("source", "candidate"),
    [
        ("Pathology confirms Mycoplasma pneumoniae.", "Pathology confirms Streptococcus pneumoniae."),
        ("Plan to consider prescription for fluoxetine.", "Plan to consider prescription for buspirone."),
        ("Started furosemide 40 mg twice daily.", "Started furosemide 80 mg twice daily."),
        ("Swelling of the left knee was noted.", "Swelling of the right knee was noted."),
        ("A single dose of ceftriaxone was given.", "3 doses of ceftriaxone were given."),
    ],
)
def test_a_swap_of_specific_terms_numbers_or_sides_is_a_confident_contradiction(source: str, candidate: str) -> None:
    results = judged(candidate, source)
    assert results["fidelity_conformity"].score is not None and results["fidelity_conformity"].score < 1.0
    (first, *_) = results["fidelity_conformity"].evidence
    assert first.get("certain", True) is True


def test_an_added_specific_claim_is_confident_and_an_added_common_one_is_not() -> None:
    specific = judged("Furosemide was started. Vancomycin was added for MRSA bacteremia.", "Furosemide was started.")
    assert specific["fidelity_consistency"].score == 0.5
    common = judged("Furosemide was started. She felt much better the next day.", "Furosemide was started.")
    assert common["fidelity_consistency"].score == 1.0
    (unsure,) = common["fidelity_consistency"].evidence
    assert unsure["mismatch"] == "unsupported" and unsure["certain"] is False
    assert uncertain(common["fidelity_consistency"].evidence) == 1


def test_a_finding_is_counted_from_the_judges_threshold() -> None:
    """The confidence threshold is the judge's knob: at 0 every finding counts (cef-lite/3's behaviour)."""
    task = classify(sample("She has high blood pressure.", "Summarise the following note:\nShe has hypertension."))
    assert score(task).consistency == 1.0
    assert score(task, confident=0.0).consistency == 0.0


def test_a_placeholder_is_one_name_and_another_placeholder_another_person() -> None:
    (sentence,) = statements("[NAME_1] was started on warfarin 5 mg.")
    assert "name1" in sentence.terms and "1" not in sentence.terms
    same = judged("[NAME_1] was started on warfarin 5 mg.", "[NAME_1] was started on warfarin 5 mg daily.")
    assert same["fidelity_conformity"].score == 1.0
    other = judged("[NAME_2] was started on warfarin 5 mg daily.", "[NAME_1] was started on warfarin 5 mg daily.")
    assert other["fidelity_conformity"].score == 0.0  # the answer puts the drug on someone else
