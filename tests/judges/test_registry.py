"""The judge registry: names to new judges."""

from __future__ import annotations

import pytest

from judges.refusal import RefusalJudge
from judges.registry import JUDGES, UnknownJudgeError, build


def test_build_returns_a_new_judge_per_name_in_order() -> None:
    first, second = build(["refusal", "refusal"])
    assert isinstance(first, RefusalJudge) and isinstance(second, RefusalJudge)
    assert first is not second
    assert build([]) == []


def test_unknown_names_are_a_value_error_listing_the_known_ones() -> None:
    known = (
        "cef-cascade, cef-lite, cef-llm, cef-llm-batch, fidelity, guard, harm-llm, refusal, safety-rules, "
        "sycophancy-live"
    )
    with pytest.raises(ValueError, match=rf"unknown judge 'nope', 'other'; known: {known}") as error:
        build(["refusal", "nope", "other"])
    assert isinstance(error.value, UnknownJudgeError)
    assert ", ".join(sorted(JUDGES)) == known


def test_cef_cascade_needs_a_judge_model() -> None:
    with pytest.raises(UnknownJudgeError, match=r"judge 'cef-cascade' needs a judge model: set judging\.llm"):
        build(["cef-cascade"])
