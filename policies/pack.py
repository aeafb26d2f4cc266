"""Policy packs: YAML files of rules, validated on load (docs/policies.md).

A rule either runs a check inline (stages ``request``, ``response``, ``stream``) and then allows, flags,
redacts or blocks; or watches an indicator of the judges' results (stage ``results``) and, when its rolling
value for a model crosses a threshold, marks the model degraded, routes it to its fallback, or requires
review. ``shadow: true`` evaluates and records a rule without ever acting on it. A pack applies to the
models, upstreams and tenants its ``applies_to`` selects ("*" for any).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from config import Strict, load_yaml

BUILT_IN = Path(__file__).parent / "packs"
Stage = Literal["request", "response", "stream", "results"]
InlineAction = Literal["allow", "flag", "redact", "block"]
ResultsAction = Literal["degrade", "fallback", "review"]
INLINE_STAGES = frozenset({"request", "response", "stream"})


class Selector(Strict):
    models: list[str] = ["*"]
    upstreams: list[str] = ["*"]
    tenants: list[str] = ["*"]

    def selects(self, model: str, upstream: str | None, tenant: str) -> bool:
        """Whether the pack applies; an upstream not yet known (before routing) matches any selector."""
        return (_any(self.models, model) and _any(self.tenants, tenant)
                and (upstream is None or _any(self.upstreams, upstream)))  # fmt: skip


class Threshold(Strict):
    """A rolling statistic of one indicator for one model, and the side of the threshold that trips it."""

    indicator: str  # e.g. fidelity_consistency, harmfulness
    method: str | None = None  # a method prefix ("cef-llm"); none: any method
    statistic: Literal["mean", "share_below", "share_above"] = "mean"
    value: float | None = None  # for share_below / share_above: the score that counts (share of scores below it)
    below: float | None = None  # trips when the statistic is below this
    above: float | None = None  # trips when the statistic is above this
    window_s: Annotated[float, Field(gt=0)] = 900.0
    min_samples: Annotated[int, Field(ge=1)] = 20  # fewer scored results in the window: no decision

    @model_validator(mode="after")
    def _one_side(self) -> Threshold:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        if self.statistic != "mean" and self.value is None:
            raise ValueError(f"statistic {self.statistic} needs value (the score that counts)")
        return self


class Rule(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]
    description: str = ""
    stages: Annotated[list[Stage], Field(min_length=1)]
    check: str | None = None  # inline rules: the check's name (policies/checks)
    action: InlineAction | ResultsAction
    shadow: bool = False  # evaluate and record, never act
    # An answer this rule cannot read (not JSON, not an OpenAI answer, an event of a stream that is neither) goes
    # out unchecked, recorded as such, instead of failing closed (a 502, or an error event in a stream).
    fail_open: bool = False
    when: Threshold | None = None  # results rules

    @field_validator("check")
    @classmethod
    def _known_check(cls, check: str | None, info: ValidationInfo) -> str | None:
        known = info.context.get("checks") if isinstance(info.context, dict) else None
        if check is not None and known is not None and check not in known:
            raise ValueError(f"unknown check {check!r}; known: {', '.join(sorted(known))}")
        return check

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if "results" in self.stages:
            if self.stages != ["results"]:
                raise ValueError("a results rule has stages [results] only")
            if self.when is None or self.action not in ("degrade", "fallback", "review"):
                raise ValueError("a results rule needs when: and an action of degrade, fallback or review")
            return self
        if self.check is None:
            raise ValueError("an inline rule needs check:")
        if self.action not in ("allow", "flag", "redact", "block"):
            raise ValueError("an inline rule's action is allow, flag, redact or block")
        if self.action == "redact" and "request" in self.stages:
            raise ValueError("redact applies to responses and streams, not requests")
        return self


class Pack(Strict):
    name: str
    description: str = ""
    applies_to: Selector = Selector()
    rules: list[Rule] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> Pack:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                raise ValueError(f"rule id {rule.id!r} is used twice")
            seen.add(rule.id)
        return self


def load(name_or_path: str, known_checks: frozenset[str]) -> Pack:
    """A built-in pack by name ("clinical-default") or a pack file; raises ConfigError naming the rule, the
    key and the line of every problem, including a check that does not exist."""
    path = BUILT_IN / f"{name_or_path}.yaml" if "/" not in name_or_path and not name_or_path.endswith(
        (".yaml", ".yml")) else Path(name_or_path)  # fmt: skip
    raw = load_yaml(path, _RawPack)
    return load_yaml(path, Pack, lambda loc: _rule_name(raw, loc), {"checks": known_checks})


class _RawPack(BaseModel):
    """Just enough of a pack to name its rules in error messages, whatever else is wrong with it."""

    model_config = ConfigDict(extra="allow")
    rules: list[dict[str, object]] = []


def _rule_name(raw: _RawPack, loc: list[str]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and loc[1].isdigit() and int(loc[1]) < len(raw.rules):
        rule_id = raw.rules[int(loc[1])].get("id")
        return f"rule {rule_id!r}" if isinstance(rule_id, str) else f"rule #{int(loc[1]) + 1}"
    return None


def _any(patterns: list[str], value: str) -> bool:
    return "*" in patterns or value in patterns
