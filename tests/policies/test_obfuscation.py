"""Obfuscations of the pack's own positive cases keep their verdict (property-based, hypothesis): what an
attacker would write to slip a dose or an identifier past the checks is read as a reader reads it
(text/normal.py), and the finding maps back onto the characters as written."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.checks.base import Context
from policies.checks.dose import DoseCheck
from policies.checks.phi import PhiLeak
from policies.engine import checked
from text.normal import normal

DOSES = [
    "Take 3000 mg of acetaminophen every 4 hours.",
    "Give 1200 mg of ibuprofen four times a day.",
    "Methotrexate 15 mg daily is the plan.",
]
LEAKS = [
    "Her record number is MRN 4455667.",
    "Call her on (617) 555-0143 tomorrow.",
]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff"]
HOMOGLYPHS = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "i": "\u0456"}
FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}

DOSE, PHI = DoseCheck(), PhiLeak()


@st.composite
def obfuscated(draw: st.DrawFn, text: str) -> str:
    """``text`` with zero-width characters inside its words and numbers, some letters swapped for look-alikes
    of other scripts and some digits written full width."""
    out = []
    for char in text:
        kind = draw(st.sampled_from(["keep", "keep", "zero-width", "look-alike"]))
        if kind == "look-alike" and char in HOMOGLYPHS:
            out.append(HOMOGLYPHS[char])
        elif kind == "look-alike" and char in FULL_WIDTH:
            out.append(FULL_WIDTH[char])
        else:
            out.append(char)
        if kind == "zero-width" and char.isalnum():
            out.append(draw(st.sampled_from(ZERO_WIDTH)))
    return "".join(out)


def spaced_digits(text: str) -> str:
    return re.sub(r"\d{2,}", lambda m: " ".join(m.group()), text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(DOSES))
def test_an_obfuscated_overdose_is_still_found_and_its_span_is_the_written_one(data: st.DataObject, case: str) -> None:
    assert checked(DOSE, normal(case), Context())
    written = data.draw(obfuscated(case))
    findings = checked(DOSE, normal(written), Context())
    assert findings, ascii(written)
    span = normal(written[findings[0].start : findings[0].end]).text  # the written characters, read again
    dose = re.search(r"\d+", case)
    assert dose is not None and dose.group() in span.replace(" ", ""), ascii(written)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(LEAKS))
def test_an_obfuscated_identifier_is_still_found(data: st.DataObject, case: str) -> None:
    assert checked(PHI, normal(case), Context())
    written = data.draw(obfuscated(case))
    assert checked(PHI, normal(written), Context()), ascii(written)


def test_digits_spaced_one_by_one_keep_the_verdict() -> None:
    for case in DOSES:
        assert checked(DOSE, normal(spaced_digits(case)), Context()), spaced_digits(case)
    assert checked(PHI, normal(spaced_digits(LEAKS[0])), Context())


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_obfuscating_a_safe_answer_does_not_make_it_a_finding(data: st.DataObject) -> None:
    safe = "Take 500 mg of acetaminophen every 6 hours, no more than 3 g a day, and rest the knee."
    written = data.draw(obfuscated(safe))
    assert checked(DOSE, normal(written), Context()) == [], ascii(written)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), case=st.sampled_from(DOSES), size=st.integers(min_value=1, max_value=6))
def test_an_obfuscated_overdose_streamed_token_by_token_never_shows_its_dose(
    data: st.DataObject, case: str, size: int
) -> None:
    from tests.policies.test_stream_guard import default_guard, released_at

    written = data.draw(obfuscated(case))
    _, sent = released_at(default_guard(), written, size)
    dose = re.search(r"\d+", case)
    assert dose is not None and dose.group() not in normal(sent).text.replace(" ", ""), ascii(sent)
