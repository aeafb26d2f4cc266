"""The Hyperscan prefilters may only rule out patterns that cannot match: on every text of the checks' own test
cases and of MEDEC-MS (with identifiers mixed in), a pattern that matches in Python is among the possible ones."""

from __future__ import annotations

import random
import re

import pytest

from policies.checks.injection import PATTERNS as INJECTION
from policies.checks.red_flags import TERMS
from tests.judges.test_refusal import ANSWERS, REFUSALS
from tests.policies.test_injection import BENIGN, INJECTIONS
from tests.policies.test_red_flags import (
    ESCALATING_ANSWERS,
    NO_RED_FLAG_REQUESTS,
    NOT_ESCALATING_ANSWERS,
    RED_FLAG_REQUESTS,
)
from tests.text.test_identifiers import AFTER, PIECES, medec_texts
from text.identifiers import _PATTERNS
from text.refusal import PREFILTER as REFUSAL_PREFILTER
from text.scan import Needles, Prefilter, fold


def corpus() -> list[str]:
    rng = random.Random(11)
    texts = [*PIECES, *medec_texts()]
    for text in medec_texts():
        words = text.split(" ")
        for _ in range(rng.randint(1, 6)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(PIECES) + rng.choice(AFTER))
        texts.append(" ".join(words))
    checks = [case[0] for case in [*INJECTIONS, *RED_FLAG_REQUESTS]]
    checks += [*BENIGN, *NO_RED_FLAG_REQUESTS, *ESCALATING_ANSWERS, *NOT_ESCALATING_ANSWERS, *REFUSALS, *ANSWERS]
    return texts + [str(text) for text in checks]


IDENTIFIERS = {str(index): pattern.regex for index, pattern in enumerate(_PATTERNS)}
INJECTION_PATTERNS = {pattern_id: pattern for pattern_id, (_, pattern) in INJECTION.items()}
REFUSAL_PATTERNS = dict(REFUSAL_PREFILTER.patterns)


@pytest.mark.parametrize(
    ("patterns", "folded"),
    [(IDENTIFIERS, False), (INJECTION_PATTERNS, False), (TERMS, True), (REFUSAL_PATTERNS, False)],
    ids=["identifiers", "injection", "red-flag terms", "refusal rules"],
)
def test_a_pattern_that_matches_is_never_ruled_out(patterns: dict[str, re.Pattern[str]], folded: bool) -> None:
    prefilter = Prefilter(patterns)
    matched = 0
    for text in corpus():
        text = fold(text) if folded else text
        possible = prefilter.possible(text)
        if possible is None:
            continue  # not ASCII: every pattern runs
        for key, pattern in patterns.items():
            if pattern.search(text):
                matched += 1
                assert key in possible, (key, text[:100])
    assert matched >= 20  # the corpus exercises the patterns


def test_a_text_without_candidates_rules_every_pattern_out_and_non_ascii_rules_none() -> None:
    prefilter = Prefilter(IDENTIFIERS)
    assert prefilter.possible("A 24-year-old woman with a cough for three days.") == set()
    phone = "Call 555-123-4567"
    matching = {key for key, pattern in IDENTIFIERS.items() if pattern.search(phone)}
    assert matching and matching <= (prefilter.possible(phone) or set())
    assert prefilter.possible("Café au lait spots") is None


def _needle_texts(words: list[str]) -> list[str]:
    """The corpus, and texts holding ``words`` as written, capitalised, shouted and with their inner punctuation
    changed ("give up", "give-up", "GIVE/UP")."""
    rng = random.Random(7)
    texts = corpus()
    for word in words:
        for form in (word, word.capitalize(), word.upper(), re.sub(r"[^a-z0-9]", rng.choice(" -/"), word)):
            texts.append(f"{rng.choice(['Then', 'so', '-', '(', '2.'])} {form}{rng.choice(['', ' it', 'ed', '.'])}")
    return texts


def test_a_needle_gate_never_hides_a_needle_that_occurs() -> None:
    """Needles joined to the answer's one pass (the dose check's drug names, the instruction check's verbs) are
    looked for only when the gate says one can occur: on every text, gated and ungated ``find`` agree."""
    from policies.checks.dose import _default_names
    from policies.checks.instructions import ACTION_NEEDLES

    found = 0
    for gated in (_default_names().first_words, ACTION_NEEDLES):
        assert gated.gate is not None
        plain = Needles(gated.needles)
        for text in _needle_texts([word for words in gated.needles.values() for word in words]):
            folded = fold(text)
            expected = plain.find(text, folded)
            assert gated.find(text, folded) == expected, text[:100]
            found += bool(expected)
    assert found >= 500  # the texts exercise the needles


class _Counting:
    """A Hyperscan database that counts its scans."""

    def __init__(self, database: object) -> None:
        self.database = database
        self.scans = 0

    def scan(self, *args: object, **kwargs: object) -> object:
        self.scans += 1
        return self.database.scan(*args, **kwargs)  # type: ignore[attr-defined]


def test_one_pass_over_an_answer_serves_every_check_that_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from policies.checks.base import Context
    from policies.checks.registry import all_checks
    from text.scan import TEXT_PREFILTERS

    checks = all_checks()
    answer = "Take 500 mg of amoxicillin three times a day; stop if a rash appears, and call Dr. Smith at 555-0100."
    TEXT_PREFILTERS.scan("warm the scratch space up")
    counting = _Counting(TEXT_PREFILTERS.compile())
    monkeypatch.setattr(TEXT_PREFILTERS, "_database", counting)
    context = Context("What dose of amoxicillin?", "")
    for name in ("dose_above_max", "phi_leak", "dangerous_instruction", "refusal"):
        checks[name](answer, context)
    assert counting.scans == 1
    other = "I cannot help with that request."
    assert checks["refusal"](other, context)  # another text is scanned anew, and read right
    assert counting.scans == 2
