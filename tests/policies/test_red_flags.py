"""red_flag_unescalated: red flags in the request, negation, and whether the answer escalates."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from config import PoliciesConfig
from policies.checks.base import REQUEST_PREFILTERS, Context
from policies.checks.instructions import fold, windows
from policies.checks.red_flags import (
    _NEGATION_CHARS,
    DIRECT,
    ESCALATION,
    ESCALATION_ACRONYM,
    ESCALATION_NEEDLES,
    ESCALATION_WINDOW,
    NEGATED,
    PAIRS,
    RED_FLAGS,
    ROLE_TERMS,
    TERM_NEEDLES,
    TERM_WINDOW,
    TERMS,
    RedFlagCheck,
    _counts,
    _near,
    escalates,
    red_flags,
)
from policies.setup import build_engine
from protocol.exchange import Exchange
from tests.text.test_identifiers import medec_texts

CHECK = RedFlagCheck()
UNESCALATED = "Rest, drink plenty of fluids and take paracetamol. See how you feel tomorrow."

# (request, the red flag it holds)
RED_FLAG_REQUESTS = [
    ("I've had chest pain for an hour and I'm sweating a lot. Can I take an aspirin?", "chest_pain"),
    ("Crushing pain in my chest that's spreading to my left arm and jaw.", "chest_pain"),
    ("My dad has chest tightness and the pain is going down his left arm.", "chest_pain"),
    ("I suddenly got the worst headache of my life while lifting weights.", "thunderclap_headache"),
    ("Thunderclap headache 20 minutes ago, what painkiller should I take?", "thunderclap_headache"),
    ("My mum's face is drooping on one side and her speech is slurred.", "stroke_signs"),
    ("He has sudden weakness on one side of his body and can't lift his cup.", "stroke_signs"),
    ("I can't breathe properly and my lips are turning blue.", "breathing_difficulty"),
    ("My son is struggling to breathe, what inhaler dose?", "breathing_difficulty"),
    ("I've been having suicidal thoughts and I want to end my life.", "suicidal"),
    ("I keep thinking about hurting myself, how do I sleep better?", "suicidal"),
    ("My throat is swelling up after a wasp sting.", "anaphylaxis"),
    ("My lips are swollen after eating shrimp and I feel itchy all over.", "anaphylaxis"),
    ("I've been vomiting blood since this morning.", "major_bleeding"),
    ("I have black tarry stools and I feel weak.", "major_bleeding"),
    ("My daughter has been having a seizure for more than 5 minutes.", "prolonged_seizure"),
    ("He's had a fit and it won't stop, what do I do?", "prolonged_seizure"),
    ("My son has a high fever and a stiff neck.", "meningitis_signs"),
    ("There's a rash that doesn't fade when I press a glass on it.", "meningitis_signs"),
    ("I'm 30 weeks pregnant and I fainted at work today.", "pregnancy_emergency"),
    ("I'm pregnant and I have severe abdominal pain on one side.", "pregnancy_emergency"),
    ("My 6-week-old baby has a temperature of 38.2, can I give Calpol?", "infant_fever"),
    ("My three week old has a fever and is feeding less.", "infant_fever"),
    ("I took a whole bottle of paracetamol an hour ago.", "overdose"),
    ("I took 30 of my sleeping pills and now I feel drowsy.", "overdose"),
    ("Pt reports suicidal ideation with a plan.", "suicidal"),
]

NO_RED_FLAG_REQUESTS = [
    "No chest pain, just a dry cough for a week.",
    "Denies suicidal thoughts or self-harm. Sleep is poor.",
    "I don't have any difficulty breathing, just a blocked nose.",
    "Mild headache, no fever, no stiff neck.",
    "My 5-month-old has a fever of 38.5.",
    "The seizure lasted about 2 minutes and he's fine now.",
    "My throat feels swollen with this cold.",
    "I'm not pregnant; I fainted after giving blood.",
    "I can't breathe through my nose because of my cold.",
    "What foods should I eat if I have type 2 diabetes?",
    "I have a stiff neck from sleeping awkwardly.",
    "I took 10 units of insulin at 8 pm.",
    "I had a bee sting and it's itchy, no swelling of my throat.",
    "Patient denies chest pain, shortness of breath or sweating.",
    "Been feeling really sweaty at night, no chest pain.",
    "What is the maximum dose of ibuprofen for an adult?",
    "I hurt myself playing football and my ankle is swollen.",
    "Is it normal to feel faint when standing up quickly?",
]

ESCALATING_ANSWERS = [
    "Call 999 now and chew a 300 mg aspirin while you wait.",
    "Please call 911 or go to the nearest emergency department.",
    "Go to A&E straight away.",
    "This needs the ER today.",
    "Call an ambulance.",
    "Seek immediate medical attention.",
    "You need urgent medical care.",
    "Please reach out to a crisis line, or call or text 988 any time.",
    "You can talk to the Samaritans on 116 123, day or night.",
    "Contact poison control right away.",
    "Don't hesitate to call 999 if it gets worse.",
    "Do not drive yourself to A&E; call an ambulance.",
    "This is a medical emergency.",
    "Go straight to hospital.",
]

NOT_ESCALATING_ANSWERS = [
    UNESCALATED,
    "You don't need to go to A&E for this.",
    "There's no need for an ambulance.",
    "Your BP of 112/70 is fine.",
    "Book a routine appointment with your GP next week.",
]


@pytest.mark.parametrize(("request_text", "flag"), RED_FLAG_REQUESTS)
def test_red_flag_without_escalation_is_found(request_text: str, flag: str) -> None:
    findings = CHECK(UNESCALATED, Context(request_text=request_text))
    assert len(findings) == 1
    (finding,) = findings
    assert finding.check == "red_flag_unescalated"
    assert (finding.start, finding.end) == (0, len(UNESCALATED))
    assert "paracetamol" in UNESCALATED[finding.start : finding.end]
    assert finding.detail == {"red_flag": flag}


@pytest.mark.parametrize(("request_text", "flag"), RED_FLAG_REQUESTS)
def test_red_flag_with_escalation_is_not_flagged(request_text: str, flag: str) -> None:
    answer = f"{UNESCALATED} If it gets worse at all, call 999 or go to A&E."
    assert CHECK(answer, Context(request_text=request_text)) == []


@pytest.mark.parametrize("request_text", NO_RED_FLAG_REQUESTS)
def test_request_without_red_flag_is_not_flagged(request_text: str) -> None:
    assert red_flags(request_text) == []
    assert CHECK(UNESCALATED, Context(request_text=request_text)) == []


@pytest.mark.parametrize(("request_text", "flag"), RED_FLAG_REQUESTS)
def test_detail_holds_the_red_flag_id_only(request_text: str, flag: str) -> None:
    request = f"Zebedee Quux, MRN 44170. {request_text}"
    (finding,) = CHECK(f"Zebedee, {UNESCALATED}", Context(request_text=request))
    assert list(finding.detail) == ["red_flag"]
    assert finding.detail["red_flag"] in RED_FLAGS
    assert not any(word in repr(finding.detail) for word in ("Zebedee", "Quux", "44170"))


@pytest.mark.parametrize("answer", ESCALATING_ANSWERS)
def test_escalation_is_recognised(answer: str) -> None:
    assert escalates(answer)


@pytest.mark.parametrize("answer", NOT_ESCALATING_ANSWERS)
def test_negated_or_absent_escalation_is_not_escalation(answer: str) -> None:
    assert not escalates(answer)


def test_negated_escalation_does_not_clear_a_red_flag() -> None:
    answer = "You don't need to go to A&E; rest and take paracetamol."
    findings = CHECK(answer, Context(request_text="Chest pain radiating to my jaw, I'm clammy."))
    assert [f.detail for f in findings] == [{"red_flag": "chest_pain"}]


def test_most_urgent_flag_is_named_and_all_are_listed() -> None:
    request = "I'm 12 weeks pregnant, I fainted, and I have been thinking about ending my life."
    assert red_flags(request) == ["suicidal", "pregnancy_emergency"]
    (finding,) = CHECK(UNESCALATED, Context(request_text=request))
    assert finding.detail == {"red_flag": "suicidal"}


def test_companion_symptom_far_away_does_not_pair() -> None:
    filler = "I have been reading about diet and exercise and sleep hygiene for months now. " * 4
    assert red_flags(f"I had a bit of chest pain on Monday. {filler}I sweat a lot at the gym.") == []


def test_negation_does_not_cross_but() -> None:
    assert red_flags("No fever but my chest pain is radiating to my left arm.") == ["chest_pain"]


def test_empty_request_has_no_red_flag() -> None:
    assert CHECK(UNESCALATED, Context()) == []


@pytest.mark.parametrize("text", [case[0] for case in RED_FLAG_REQUESTS] + NO_RED_FLAG_REQUESTS)
def test_needle_windows_hold_every_term(text: str) -> None:
    folded = fold(text)
    for term, pattern in TERMS.items():
        spans = list(windows(TERM_NEEDLES[term].find(text, folded).get(term, []), len(text), TERM_WINDOW))
        for m in pattern.finditer(folded):
            assert any(start <= m.start() and m.end() <= end for start, end in spans), (term, m.group())


@pytest.mark.parametrize("answer", ESCALATING_ANSWERS + NOT_ESCALATING_ANSWERS)
def test_needle_windows_hold_every_escalation(answer: str) -> None:
    folded = fold(answer)
    positions = ESCALATION_NEEDLES.find(answer, folded).get("escalation", [])
    spans = list(windows(positions, len(answer), ESCALATION_WINDOW))
    for m in [*ESCALATION.finditer(folded), *ESCALATION_ACRONYM.finditer(answer)]:
        assert any(start <= m.start() and m.end() <= end for start, end in spans), m.group()


def full_scan_red_flags(text: str) -> list[str]:
    """red_flags by one pass of every term over the whole request, without prefilter, needles or windows."""
    folded = fold(text)
    terms = {
        term: [m.start() for m in pattern.finditer(folded)
               if _counts(term, m) and not NEGATED.search(text, max(0, m.start() - _NEGATION_CHARS), m.start())]
        for term, pattern in TERMS.items()
    }  # fmt: skip

    def role(name: str) -> list[int]:
        return [position for term in ROLE_TERMS.get(name, (name,)) for position in terms[term]]

    found = {flag for term, flag in DIRECT.items() if terms[term]}
    found |= {flag for first, second, window, flag in PAIRS if _near(role(first), role(second), window)}
    return [flag for flag in RED_FLAGS if flag in found]


def test_red_flags_are_found_as_by_a_full_scan() -> None:
    """Prefilter, needles per term and the second term of a pair looked for only near the first change no
    result: on the cases here, on MEDEC-MS notes, and on notes with the requests' sentences mixed in far apart."""
    rng = random.Random(5)
    cases = [case[0] for case in RED_FLAG_REQUESTS] + NO_RED_FLAG_REQUESTS
    halves = [part for case in cases for part in case.split(" and ")]  # pairs split apart
    notes = medec_texts()
    texts = [*cases, *notes[:200]]
    for note in notes[:200]:
        words = note.split(" ")
        for _ in range(rng.randint(1, 4)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(halves + cases))
        texts.append(" ".join(words))
    flagged = 0
    for text in texts:
        expected = full_scan_red_flags(text)
        assert red_flags(text) == expected, text[:200]
        flagged += bool(expected)
    assert flagged >= 150  # the mixed notes exercise the pairs


@pytest.mark.parametrize("gap", range(180, 221, 4))
def test_pair_at_the_edge_of_its_window(gap: int) -> None:
    """The second term's match starts ``gap`` characters after the first's and holds its needle ("arm") well
    past its start: found exactly when within the pair's 200 characters, as by a full scan."""
    first = "Chest pain. "
    text = first + "x" * (gap - len(first) - 1) + " pain down my left arm. Should I rest?"
    assert text.index("pain down") == gap
    assert red_flags(text) == full_scan_red_flags(text) == (["chest_pain"] if gap <= 200 else [])


@pytest.mark.parametrize("gap", range(180, 221, 4))
def test_pair_at_the_edge_of_its_window_before_the_first(gap: int) -> None:
    """The second term's match starts ``gap`` characters before the first's: found exactly when within the
    pair's 200 characters (the region read for the second term reaches as far back as the window)."""
    second = "Pain down my left arm. "
    text = second + "x" * (gap - len(second) - 1) + " chest pain. Should I rest?"
    assert text.index("chest pain") == gap
    assert red_flags(text) == full_scan_red_flags(text) == (["chest_pain"] if gap <= 200 else [])


STROKE_REQUEST = "My mum's face is drooping on one side and her speech is slurred."


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The request texts red_flags is computed for."""
    calls: list[str] = []

    def counting(request_text: str, context: Context | None = None) -> list[str]:
        calls.append(request_text)
        return red_flags(request_text, context)

    monkeypatch.setattr("policies.checks.red_flags.red_flags", counting)
    return calls


def stroke_exchange() -> Exchange:
    payload = {"model": "m", "messages": [{"role": "user", "content": STROKE_REQUEST}]}
    return Exchange(request_id="r", operation="chat", tenant="t", model="m", upstream="u", payload=payload)


def test_the_request_is_read_once_while_waiting_and_not_again_after_the_answer(counted: list[str]) -> None:
    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    ex = stroke_exchange()
    engine.while_waiting(ex)
    assert counted == [STROKE_REQUEST]
    engine.after_answer(ex, False, [UNESCALATED])
    assert counted == [STROKE_REQUEST]
    assert [(d["rule"], d["detail"]) for d in ex.policy] == [("red-flag-unescalated", {"red_flag": "stroke_signs"})]


def test_one_prefilter_pass_over_the_request_serves_injection_and_red_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    scanned: list[str] = []
    scan = REQUEST_PREFILTERS.scan

    def counting(text: str) -> list[set[str]] | None:
        scanned.append(text)
        return scan(text)

    monkeypatch.setattr(REQUEST_PREFILTERS, "scan", counting)
    ex = stroke_exchange()
    engine.while_waiting(ex)
    engine.after_answer(ex, False, [UNESCALATED])
    assert scanned == [fold(STROKE_REQUEST)]
    assert [d["rule"] for d in ex.policy] == ["red-flag-unescalated"]


def test_waiting_that_comes_after_the_answer_does_nothing(counted: list[str]) -> None:
    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    ex = stroke_exchange()
    engine.after_answer(ex, False, [])  # the upstream failed before the loop came round to while_waiting
    engine.while_waiting(ex)
    assert counted == [] and ex.policy == []


@pytest.mark.parametrize(
    ("request_text", "flag"),
    [
        ("I can\u2019t breathe and my lips are turning blue.", "breathing_difficulty"),
        ("Caf\u00e9 owner, 58: crushing chest pain and I\u2019m sweating.", "chest_pain"),
        ("My mum\u2019s face is drooping and she\u00a0can\u2019t lift her arm.", "stroke_signs"),
    ],
)
def test_a_text_outside_ascii_is_read_without_the_prefilter(request_text: str, flag: str) -> None:
    assert not request_text.isascii()
    assert red_flags(request_text)[:1] == [flag] == full_scan_red_flags(request_text)[:1]
    assert CHECK(UNESCALATED, Context(request_text)) != []
