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
