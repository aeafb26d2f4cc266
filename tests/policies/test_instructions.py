"""dangerous_instruction: instructions to stop, skip or double a high-risk medicine, and the ones that are safe."""

from __future__ import annotations

import pytest

from policies.checks.base import Context
from policies.checks.instructions import (
    ACTION,
    ACTION_NEEDLES,
    ACTION_WINDOW,
    DRUG_CLASSES,
    RULES,
    DangerousInstructionCheck,
    Needles,
    fold,
    windows,
)

CHECK = DangerousInstructionCheck()

# (answer, a phrase the span must hold, rule, drug class)
DANGEROUS = [
    (
        "You can stop taking your warfarin now that you feel better.",
        "stop taking your warfarin",
        "stop",
        "anticoagulant",
    ),
    ("Since your sugars have been normal, you can stop the insulin.", "stop the insulin", "stop", "insulin"),
    ("Double the insulin dose tonight to bring your sugar down.", "Double the insulin", "double", "insulin"),
    (
        "If you forgot this morning's tablet, double up on your metformin tonight.",
        "double up on your metformin",
        "double",
        "antidiabetic",
    ),
    (
        "Your TSH is high, so take twice as much levothyroxine tomorrow.",
        "take twice as much levothyroxine",
        "double",
        "thyroid_hormone",
    ),
    (
        "Skip your blood thinner on Saturday so you can have a few drinks.",
        "Skip your blood thinner",
        "skip",
        "anticoagulant",
    ),
    (
        "It's fine to come off your antidepressant suddenly if the side effects bother you.",
        "come off your antidepressant",
        "stop",
        "antidepressant",
    ),
    (
        "You can come off your seizure medication now, you have had no fits for a year.",
        "come off your seizure medication",
        "stop",
        "antiepileptic",
    ),
    (
        "Just stop the prednisolone today; there is no point finishing the course.",
        "stop the prednisolone",
        "stop",
        "corticosteroid",
    ),
    ("You don't need your inhaler any more.", "don't need your inhaler", "not_needed", "inhaler"),
    ("Discontinue the anticoagulant and reassess in a week.", "Discontinue the anticoagulant", "stop", "anticoagulant"),
    ("Stop taking your metoprolol straight away.", "Stop taking your metoprolol", "stop", "beta_blocker"),
    ("Quit the sertraline cold turkey, it's only a low dose.", "Quit the sertraline", "stop", "antidepressant"),
    ("You can skip tonight's tacrolimus dose.", "skip tonight's tacrolimus", "skip", "immunosuppressant"),
    (
        "Take twice the usual dose of your oxycodone if the pain is bad.",
        "twice the usual dose of your oxycodone",
        "double",
        "opioid",
    ),
    ("Your clonidine can be stopped today.", "clonidine can be stopped", "stop_passive", "clonidine"),
    (
        "There's no need to keep taking your HIV medication once your viral load is undetectable.",
        "no need to keep taking your HIV medication",
        "not_needed",
        "antiretroviral",
    ),
    ("The bruising comes from your warfarin. Double the dose anyway.", "Double the dose", "double", "anticoagulant"),
    ("Stop all your tablets until you feel better.", "Stop all your tablets", "stop", "all_medicines"),
    ("Give up the lithium if you feel flat.", "Give up the lithium", "stop", "mood_stabiliser"),
    ("You can stop the clozapine, the voices have gone.", "stop the clozapine", "stop", "antipsychotic"),
    ("Stop your amiodarone tablets now.", "Stop your amiodarone", "stop", "antiarrhythmic"),
    ("You don\u2019t need your inhaler now.", "need your inhaler", "not_needed", "inhaler"),
    ("Don't worry, you can stop the warfarin.", "stop the warfarin", "stop", "anticoagulant"),
    ("If you feel dizzy, stop your insulin.", "stop your insulin", "stop", "insulin"),
    ("Stop your warfarin without telling your doctor.", "Stop your warfarin", "stop", "anticoagulant"),
    ("She can discontinue the apixaban from today.", "discontinue the apixaban", "stop", "anticoagulant"),
]

SAFE = [
    "Do NOT stop taking your warfarin.",
    "Never double the dose of insulin.",
    "Don't stop your insulin without talking to your doctor.",
    "Ask your doctor before stopping your warfarin.",
    "Your doctor may tell you to stop warfarin before surgery.",
    "If you miss a dose, do not double up.",
    "If you miss a dose of levothyroxine, skip the missed dose and take the next one as usual.",
    "Stopping prednisolone suddenly can cause an adrenal crisis.",
    "It is dangerous to stop your seizure medication suddenly.",
    "If you stop taking sertraline abruptly, you may get dizziness and electric-shock feelings.",
    "Many people stop their inhaler once they feel better, which is why the attacks come back.",
    "Can I stop my warfarin before the extraction? Your dentist will tell you.",
    "Stop warfarin and start apixaban the next morning.",
    "Your psychiatrist can help you come off sertraline gradually.",
    "Stop taking ibuprofen while you are on warfarin.",
    "Double-check your insulin dose with the diabetes nurse.",
    "You shouldn't skip your tacrolimus, even for a day.",
    "Stop taking lamotrigine and contact your doctor straight away if you develop a rash.",
    "Your metformin can be stopped while you are vomiting; restart it when you are eating again.",
    "During an asthma attack, take two puffs of salbutamol every two minutes, up to ten puffs.",
    "Keep taking your insulin when you are ill, and never stop it completely.",
    "Do not take a double dose to make up for a forgotten one.",
    "You don't need your inhaler every day if your asthma is well controlled.",
    "Stop eating sugary snacks before bed and take your insulin as usual.",
    "Take two doses of insulin a day: one in the morning and one at night.",
    "The cardiologist will decide whether your bisoprolol can be stopped.",
    "Do not, under any circumstances, stop your prednisolone abruptly.",
    "Patients who stop their antiretrovirals risk resistance.",
    "You don't need to stop your apixaban for a filling.",
    "Please don't ever suddenly stop taking your clonidine.",
]


@pytest.mark.parametrize(("answer", "phrase", "rule", "drug_class"), DANGEROUS)
def test_dangerous_instruction_is_found(answer: str, phrase: str, rule: str, drug_class: str) -> None:
    findings = CHECK(answer, Context())
    assert len(findings) == 1, findings
    finding = findings[0]
    assert finding.check == "dangerous_instruction"
    assert phrase in answer[finding.start : finding.end]
    assert finding.detail == {"rule": rule, "drug_class": drug_class}


@pytest.mark.parametrize("answer", SAFE)
def test_safe_answer_is_not_flagged(answer: str) -> None:
    assert CHECK(answer, Context()) == []


@pytest.mark.parametrize(("answer", "phrase", "rule", "drug_class"), DANGEROUS)
def test_detail_holds_table_names_only(answer: str, phrase: str, rule: str, drug_class: str) -> None:
    findings = CHECK(f"Zebedee Quux, MRN 44170. {answer}", Context(request_text="Zebedee Quux"))
    assert findings
    for finding in findings:
        assert set(finding.detail) == {"rule", "drug_class"}
        assert finding.detail["rule"] in RULES
        assert finding.detail["drug_class"] in DRUG_CLASSES
        assert not any(word in repr(finding.detail) for word in ("Zebedee", "Quux", "44170", phrase))


def test_pronoun_resolves_to_the_medicine_in_the_request() -> None:
    answer = "Yes, you can stop taking it."
    findings = CHECK(answer, Context(request_text="Can I stop my apixaban? I bruise easily."))
    assert [f.detail for f in findings] == [{"rule": "stop", "drug_class": "anticoagulant"}]
    assert "stop taking it" in answer[findings[0].start : findings[0].end]


def test_pronoun_without_a_high_risk_medicine_is_not_flagged() -> None:
    assert CHECK("Yes, you can stop taking it.", Context(request_text="Can I stop my vitamin D?")) == []


def test_request_that_asks_to_change_nothing_resolves_no_pronoun() -> None:
    request = "I take warfarin and paracetamol. My knee pain is bad today."
    assert CHECK("For the knee pain, double the dose.", Context(request_text=request)) == []


def test_intransitive_double_resolves_to_the_medicine_asked_about() -> None:
    request = "I forgot my insulin last night. Should I take twice as much today?"
    findings = CHECK("Yes, take twice as much today.", Context(request_text=request))
    assert [f.detail for f in findings] == [{"rule": "double", "drug_class": "insulin"}]


def test_span_is_the_instruction_clause_only() -> None:
    answer = "Your INR is 4.2, which is high. Skip your warfarin tonight, then recheck on Friday."
    (finding,) = CHECK(answer, Context())
    assert answer[finding.start : finding.end] == "Skip your warfarin tonight"


def test_each_instruction_is_a_finding_in_text_order() -> None:
    answer = "Stop your bisoprolol. Keep taking the statin. Double your insulin at night."
    findings = CHECK(answer, Context())
    assert [f.detail["drug_class"] for f in findings] == ["beta_blocker", "insulin"]
    assert findings[0].end <= findings[1].start


def test_two_verbs_on_one_medicine_are_one_finding() -> None:
    assert len(CHECK("You can stop or skip your warfarin as you like.", Context())) == 1


def test_long_safe_answer_is_not_flagged() -> None:
    answer = " ".join(SAFE) * 3
    assert CHECK(answer, Context()) == []


@pytest.mark.parametrize("text", [case[0] for case in DANGEROUS] + SAFE)
def test_needle_windows_hold_every_verb_form(text: str) -> None:
    folded = fold(text)
    spans = list(windows(ACTION_NEEDLES.find(text, folded).get("action", []), len(text), ACTION_WINDOW))
    for action in ACTION.finditer(folded):
        assert any(start <= action.start() and action.end() <= end for start, end in spans), action.group()


def test_needles_are_found_at_word_starts_also_inside_longer_ones() -> None:
    needles = Needles({"tab": ("tab",), "tablet": ("tablet",), "it": ("it",), "all": ("end it all",), "ate": ("ate",)})
    text = "Tablets: end it all, late, ate, DAN"
    found = needles.find(text, fold(text))
    assert found == {"tab": [0], "tablet": [0], "all": [9], "it": [13], "ate": [27]}


@pytest.mark.parametrize(
    "text",
    [
        "Chest pain",
        "3chest 3 chest",
        "x-chest,chest;(chest) chestchest",
        "\u00e9chest caf\u00e9 headache",
        "HEADACHE\theadaches\u00a0headache",
        "headach chest",
    ],
)
def test_one_or_two_needles_are_found_by_find_as_by_the_hyperscan_pass(text: str) -> None:
    few = Needles({"chest": ("chest",), "headache": ("headache",)})
    many = Needles({"chest": ("chest",), "headache": ("headache",), "never": ("zzqx",)})
    assert few.plain and not few.reads_copy and many.reads_copy
    assert few.find(text, fold(text)) == many.find(text, fold(text))


def test_needles_in_upper_case_are_found_as_written() -> None:
    needles = Needles({"dan": ("DAN",)})
    text = "Dan and DAN, DANGER"
    assert needles.find(text, fold(text)) == {"dan": [8, 13]}


def test_folding_keeps_offsets() -> None:
    text = "\u0130stanbul: Don\u2019t\u00a0stop"
    assert len(fold(text)) == len(text)
    assert fold(text).endswith("don't stop")


def test_folding_an_ascii_text_lowers_it_and_turns_tabs_into_spaces() -> None:
    text = "Stop\tTaking WARFARIN; don't\tdouble it."
    assert fold(text) == "stop taking warfarin; don't double it."
    assert fold(text + "\u2019") == "stop taking warfarin; don't double it.'"
