"""phi_leak: identifiers in the answer that the caller did not supply; echoes of the caller's own pass."""

from __future__ import annotations

import pytest

from policies.checks.base import Context
from policies.checks.phi import PhiLeak

CHECK = PhiLeak()


@pytest.mark.parametrize(
    ("answer", "kind", "value"),
    [
        ("Call her on 617-555-0142 tomorrow.", "PHONE", "617-555-0142"),
        ("Her MRN is 4839201.", "MRN", "4839201"),
        ("Contact jane.roe@example.org for results.", "EMAIL", "jane.roe@example.org"),
        ("Jane Roe, a 65-year-old woman, was admitted.", "NAME", "Jane Roe"),
        ("Prescriber NPI 1234567893 signed it.", "NPI", "1234567893"),
        ("Use prescriber 1234567893 on the form.", "NPI", "1234567893"),
        ("The DEA number AB1234563 is on file.", "DEA", "AB1234563"),
        ("Registration BB1388568 appears on the script.", "DEA", "BB1388568"),
        ("DOB 03/14/1961 confirmed.", "DATE", "03/14/1961"),
    ],
)
def test_an_identifier_the_caller_did_not_supply_is_a_leak(answer: str, kind: str, value: str) -> None:
    findings = CHECK(answer, Context(request_text="Summarise the discharge plan."))
    assert [(f.detail["kind"], answer[f.start : f.end]) for f in findings] == [(kind, value)]


@pytest.mark.parametrize(
    ("answer", "request_text"),
    [
        ("Call her on 617-555-0142.", "Her number is (617) 555 0142, please remind her."),
        ("MRN 4839201: discharge tomorrow.", "Patient MRN 4839201 ready for discharge?"),
        ("Jane Roe, a 65-year-old woman, is stable.", "Note: Jane Roe, a 65-year-old woman, stable on ward."),
    ],
)
def test_the_callers_own_identifiers_are_echoes_not_leaks(answer: str, request_text: str) -> None:
    assert CHECK(answer, Context(request_text=request_text)) == []


@pytest.mark.parametrize(
    "answer",
    [
        "Take 40 mg of furosemide daily.",
        "Check potassium in 3 days.",
        "Give 1 g IV over 30 minutes.",
        "Form AB1234567 is not a valid DEA number.",
    ],
)
def test_clinical_text_without_identifiers_is_clean(answer: str) -> None:
    assert CHECK(answer, Context()) == []


def test_details_name_the_kind_only() -> None:
    (finding,) = CHECK("Call 617-555-0142.", Context())
    assert finding.detail == {"kind": "PHONE"}


def test_digits_inside_a_longer_number_of_the_callers_are_not_theirs() -> None:
    answer = "The patient, MRN 4455667, phone (617) 555-0143, was seen."
    assert [f.detail["kind"] for f in PhiLeak()(answer, Context("account 944556671 and 16175550143999"))] == [
        "MRN", "PHONE"]  # fmt: skip
    assert PhiLeak()(answer, Context("MRN: 4455667; phone 617 555 0143")) == []  # written apart, still theirs


@pytest.mark.parametrize(
    "text",
    [
        "Between April 1996 and December 2000, 120 patients were enrolled.",
        "Records from 1 January 1996 to 31 December 1998 were reviewed.",
        "We studied the months of October and November, 2004.",
        "Satisfaction score: 4.18/10 vs. 2.75/10.",
    ],
)
def test_a_study_period_or_a_score_is_not_a_persons_date(text: str) -> None:
    assert PhiLeak()(text, Context()) == []


def test_a_persons_date_is_still_one() -> None:
    findings = PhiLeak()("She was admitted on 3/14/2023 and discharged on March 20, 2023.", Context())
    assert [f.detail["kind"] for f in findings] == ["DATE", "DATE"]


@pytest.mark.parametrize(
    "text",
    [
        "164 consecutive patients underwent surgery since November 2005.",
        "Medical students were surveyed in November 2008.",
    ],
)
def test_a_month_and_year_in_a_sentence_about_no_one_is_not_a_persons_date(text: str) -> None:
    assert PhiLeak()(text, Context()) == []


@pytest.mark.parametrize(
    "text",
    ["She was admitted in March 2023 with chest pain.", "Your scan in March 2023 was normal."],
)
def test_a_month_and_year_about_one_person_is_still_theirs(text: str) -> None:
    assert [f.detail["kind"] for f in PhiLeak()(text, Context())] == ["DATE"]
