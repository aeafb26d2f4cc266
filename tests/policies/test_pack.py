"""Policy packs: the shipped pack loads; a bad pack names the rule, the key and the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError
from policies import pack
from policies.checks.registry import all_checks

CHECKS = frozenset(all_checks())


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pack.yaml"
    path.write_text(text)
    return str(path)


def test_the_clinical_default_pack_loads_and_every_rule_is_described() -> None:
    loaded = pack.load("clinical-default", CHECKS)
    assert loaded.name == "clinical-default" and loaded.rules
    assert all(rule.description and rule.check in CHECKS for rule in loaded.rules)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "  - {id: a, stages: [response], check: nope, action: block}\n",
            r"pack.yaml:3: rule 'a': rules.0.check: unknown check 'nope'",
        ),
        (
            "  - {id: ok, stages: [response], check: refusal, action: allow}\n"
            "  - {id: b, stages: [response], check: refusal, action: explode}\n",
            r"pack.yaml:4: rule 'b': rules.1.action",
        ),
        (
            "  - {id: c, stages: [request], check: refusal, action: redact}\n",
            r"pack.yaml:3: rule 'c': rules.0: redact applies to responses and streams",
        ),
        ("  - {id: d, stages: [results], action: degrade}\n", r"rule 'd': rules.0: a results rule needs when:"),
        (
            "  - {id: e, stages: [response], check: refusal, action: allow, colour: red}\n",
            r"rule 'e': rules.0.colour: Extra inputs are not permitted",
        ),
    ],
)
def test_an_invalid_rule_is_named_with_its_key_and_line(tmp_path: Path, rules: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        pack.load(write(tmp_path, f"name: p\nrules:\n{rules}"), CHECKS)


def test_a_results_rule_needs_one_side_of_its_threshold(tmp_path: Path) -> None:
    text = ("name: p\nrules:\n  - id: drift\n    stages: [results]\n    action: fallback\n"
            "    when: {indicator: fidelity_consistency, below: 0.8, above: 0.9}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"rule 'drift': rules.0.when: give exactly one of below"):
        pack.load(write(tmp_path, text), CHECKS)


def test_duplicate_rule_ids_are_refused(tmp_path: Path) -> None:
    rule = "  - {id: same, stages: [response], check: refusal, action: allow}\n"
    with pytest.raises(ConfigError, match="rule id 'same' is used twice"):
        pack.load(write(tmp_path, f"name: p\nrules:\n{rule}{rule}"), CHECKS)
