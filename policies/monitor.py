"""Results rules: a rolling indicator per model, from the judges' results, that can change how the gateway
treats the model (docs/policies.md, stage ``results``).

Every ``policies.monitor_every_s`` the monitor reads, for each results rule and each configured model it
applies to, the scored results of the rule's indicator (and method prefix) in the rule's window from the
results store (the newest 1,000 at most), computes the statistic (mean, or the share of scores below or
above a value), and sets or clears the rule's state for the model. Fewer than ``min_samples`` scores leave
the state as it is: no decision on too little evidence. While a rule holds a model:

* ``degrade``: responses carry ``x-medic-model-state: degraded``;
* ``fallback``: requests go to the model's next route (when it has one);
* ``review``: every exchange of the model is flagged (sampled for the judges) and carries
  ``x-medic-review: required``.

Each transition is written to the audit log and counted in ``medic_policy_transitions_total``; the state is
the gauge ``medic_policy_model_state``. A shadowed rule records its transitions and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from statistics import fmean

from pipeline.store import Query, ResultStore
from policies.engine import PolicyEngine
from policies.pack import Rule, Threshold, _any

log = logging.getLogger(__name__)
QUERY_LIMIT = 1000


class ResultsMonitor:
    def __init__(self, engine: PolicyEngine, store: ResultStore, models: list[str], every_s: float) -> None:
        self.engine = engine
        self.store = store
        self.models = models
        self.every_s = every_s

    @property
    def rules(self) -> list[tuple[str, Rule]]:
        return [(p.name, r) for p in self.engine.packs for r in p.rules if "results" in r.stages]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.evaluate(time.time())
            except Exception as exc:  # the store is down: keep the states, try again next time
                log.warning("results rules not evaluated: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every_s)

    async def evaluate(self, now: float) -> None:
        for pack_name, rule in self.rules:
            pack = next(p for p in self.engine.packs if p.name == pack_name)
            for model in self.models:
                if not _any(pack.applies_to.models, model):
                    continue
                value, count = await self.statistic(model, rule, now)
                if value is not None:
                    self.engine.set_state(model, pack_name, rule, _tripped(rule, value), value, count)

    async def statistic(self, model: str, rule: Rule, now: float) -> tuple[float | None, int]:
        """The rule's statistic over its window for ``model`` and the number of scores behind it (None when
        there are fewer than ``min_samples``)."""
        when = rule.when
        assert when is not None
        results = await self.store.query(Query(model=model, indicator=when.indicator, since=now - when.window_s,
                                               limit=QUERY_LIMIT))  # fmt: skip
        scores = [r.score for r in results
                  if r.score is not None and (when.method is None or r.method.startswith(when.method))]  # fmt: skip
        if len(scores) < when.min_samples:
            return None, len(scores)
        return _value(when, scores), len(scores)


def _value(when: Threshold, scores: list[float]) -> float:
    if when.statistic == "mean":
        return fmean(scores)
    assert when.value is not None
    if when.statistic == "share_below":
        return sum(1 for s in scores if s < when.value) / len(scores)
    return sum(1 for s in scores if s > when.value) / len(scores)


def _tripped(rule: Rule, value: float) -> bool:
    when = rule.when
    assert when is not None
    return (when.below is not None and value < when.below) or (when.above is not None and value > when.above)
