"""cef-cascade: a finding the judge model overrules counts as uncertain; one it upholds still counts.

First the rule with the decisions given, then the judge over HTTP against the strict fake judge (tests/fakes/judge.py:
one token with its top log-probabilities, as vLLM and OpenAI send them); tests/realmodel/test_local_engine.py runs it
against the real engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config import JudgeLLMConfig
from judges.backends import JudgeUnavailable, open_backend
from judges.fidelity import cascade as cascade_module
from judges.fidelity import cef, lite
from judges.fidelity.task import Task
from judges.fidelity.text import statements
from pipeline.sample import Choice, Response, Sample
from tests.fakes.judge import FakeJudge

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
    assert cascade_module.context(alignment, source) == "Lymph nodes are not enlarged."


# ------------------------------------------------ over HTTP, against a strict fake of an OpenAI-compatible server


def sample(candidate: str, source: str = SOURCE) -> Sample:
    request = {"messages": [{"role": "user", "content": f"Summarise the following note:\n{source}"}]}
    return Sample(request_id="r1", model="m", request=request, response=Response(choices=[Choice(content=candidate)]))


@pytest.fixture
async def cascade() -> AsyncIterator[Callable[..., tuple[cascade_module.CefCascadeJudge, FakeJudge]]]:
    made: list[tuple[cascade_module.CefCascadeJudge, FakeJudge]] = []

    def make(**knobs: Any) -> tuple[cascade_module.CefCascadeJudge, FakeJudge]:
        fake = FakeJudge(**knobs).start()
        judge = cascade_module.CefCascadeJudge(open_backend(JudgeLLMConfig(model="judge-7b", base_url=fake.base_url)))
        made.append((judge, fake))
        return judge, fake

    yield make
    for judge, fake in made:
        await judge.close()
        fake.stop()


async def test_a_clean_summary_costs_no_call(cascade: Callable[..., Any]) -> None:
    judge, fake = cascade()
    (results,) = await judge.evaluate([sample(SOURCE)])
    assert fake.calls == [] and {r.score for r in results if r.indicator == "fidelity_conformity"} == {1.0}
    assert results[0].method == f"cef-cascade/judge-7b/{cascade_module.prompt_hash()}"


async def test_the_model_is_asked_once_per_confident_finding_with_the_aligned_source_sentence(
    cascade: Callable[..., Any],
) -> None:
    judge, fake = cascade()
    (results,) = await judge.evaluate([sample(CANDIDATE)])
    (call,) = fake.calls
    assert call.schema == "same_facts"
    assert "Original: Blood cultures grew Mycoplasma pneumoniae.\nRewritten: Blood cultures grew Streptococcus " \
        "pneumoniae." in call.messages[-1]["content"]  # fmt: skip
    conformity = next(r for r in results if r.indicator == "fidelity_conformity")
    assert conformity.score == pytest.approx(2 / 3)  # the fake said No: the substitution stands
    assert (
        conformity.evidence[0]["same_facts"] == 0.1
        and conformity.evidence[0]["decided_by"] == "cef-lite and judge model"
    )


async def test_a_finding_the_model_calls_the_same_facts_lowers_no_score(cascade: Callable[..., Any]) -> None:
    judge, _ = cascade(answers="YES")
    (results,) = await judge.evaluate([sample(CANDIDATE)])
    conformity = next(r for r in results if r.indicator == "fidelity_conformity")
    assert conformity.score == 1.0
    assert conformity.evidence[0]["certain"] is False and conformity.evidence[0]["decided_by"] == "judge model"


async def test_an_answer_without_log_probabilities_fails_the_sample_rather_than_guessing(
    cascade: Callable[..., Any],
) -> None:
    judge, fake = cascade()
    fake.garbage_next(4, "Yes")
    with pytest.raises(JudgeUnavailable, match="no top log-probabilities"):
        await judge.evaluate([sample(CANDIDATE)])
