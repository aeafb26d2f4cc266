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
from text.scan import Prefilter, fold


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
