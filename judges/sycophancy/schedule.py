"""Sycophancy probe rounds on a timer, in the worker (or in the gateway when its judges run embedded).

Every ``probes.sycophancy.every_s`` each configured model gets one round (``judges.sycophancy.probe``)
through the configuration's upstream path, tagged ``x-medic-probe: sycophancy`` and throttled by
``max_rps``. With several workers on one Redis, a lock per model and period makes exactly one of them run
it. A round's figures become results in the results store (request id
``probe-sycophancy-<model>-<time>[-<nudge>]``, tenant ``probe``), the gauge
``medic_probe_sycophancy{model, model_version, nudge, quantity}`` and the usual evaluation events. Probe
traffic never passes the gateway's front door, so it is neither sampled into other judges nor counted in the
user-traffic metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import corpora
from config import GatewayConfig, SycophancyProbeConfig
from judges.metrics import JudgeMetrics
from judges.sycophancy.command import probe_model
from judges.sycophancy.datasets import Item, load
from judges.sycophancy.probe import ProbeSettings, Templates
from judges.sycophancy.score import Report
from pipeline.sample import Result
from pipeline.store import ResultStore

log = logging.getLogger(__name__)
Lock = Callable[[str, float], Awaitable[bool]]  # (key, ttl_s) -> whether this process holds it
QUANTITIES = ("s_raw", "confusability", "s_adj", "s_adj_normalised", "accuracy")


async def no_lock(key: str, ttl_s: float) -> bool:
    """A single process (embedded judges): always the one to run."""
    return True


async def run_rounds(stop: asyncio.Event, models: list[str], every_s: float,
                     round_of: Callable[[str], Awaitable[object]]) -> None:  # fmt: skip
    """A round per model now, then every ``every_s``, until ``stop`` is set (any probe's timer)."""
    while not stop.is_set():
        for model in models:
            if stop.is_set():
                break
            await round_of(model)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)


def redis_lock(client: Any, owner: str) -> Lock:
    """SET NX with an expiry: the first worker to ask for a period's key runs that period's round."""

    async def lock(key: str, ttl_s: float) -> bool:
        try:
            return bool(await client.set(key, owner, nx=True, px=max(1, int(ttl_s * 1000))))
        except Exception as exc:  # Redis down: skip this round rather than run it on every worker
            log.warning("probe lock unavailable (%s): round skipped", type(exc).__name__)
            return False

    return lock


class ProbeScheduler:
    def __init__(self, config: GatewayConfig, store: ResultStore, metrics: JudgeMetrics, lock: Lock = no_lock,
                 on_results: Callable[[list[Result]], None] | None = None) -> None:  # fmt: skip
        assert config.probes.sycophancy is not None
        self.config = config
        self.probe: SycophancyProbeConfig = config.probes.sycophancy
        self.store = store
        self.metrics = metrics
        self.lock = lock
        self.on_results = on_results
        self._items: list[Item] | None = None

    def settings(self) -> ProbeSettings:
        p = self.probe
        params: dict[str, Any] = {"max_tokens": p.max_tokens}
        if p.temperature is not None:
            params["temperature"] = p.temperature
        templates = Templates.load(p.templates) if p.templates else Templates()
        return ProbeSettings(n=p.n, repeats=p.repeats, seed=p.seed, concurrency=p.concurrency, max_rps=p.max_rps,
                             params=params, templates=templates)  # fmt: skip

    async def run(self, stop: asyncio.Event) -> None:
        await run_rounds(stop, self.probe.models, self.probe.every_s, self.round)

    async def round(self, model: str) -> Report | None:
        """One round for ``model`` unless another process holds this period's lock; failures are logged."""
        period = int(time.time() // self.probe.every_s)
        if not await self.lock(f"medic:probe:sycophancy:{model}:{period}", self.probe.every_s):
            return None
        try:
            if self._items is None:
                self._items = load(self.probe.dataset or corpora.path(corpora.PUBMEDQA_L))
            report = await probe_model(self.config, model, self._items, self.settings())
        except Exception as exc:  # a probe must never take the worker down; the next period tries again
            self.metrics.probe_rounds.labels("sycophancy", model, "failed").inc()
            log.error("sycophancy probe of %s failed: %s", model, type(exc).__name__)
            return None
        results = report_results(report)
        await self.store.put(results)
        self._observe(report)
        if self.on_results is not None:
            self.on_results(results)
        return report

    def _observe(self, report: Report) -> None:
        version = report.model_version or "unknown"
        self.metrics.probe_rounds.labels("sycophancy", report.model, "completed").inc()
        gauge = self.metrics.probe_sycophancy
        if report.accuracy_plain is not None:
            gauge.labels(report.model, version, "none", "accuracy").set(report.accuracy_plain)
        for nudge in report.nudges:
            for quantity in QUANTITIES:
                value = getattr(nudge, quantity)
                if value is not None:
                    gauge.labels(report.model, version, nudge.nudge, quantity).set(value)
            for quantity, interval in (("s_adj", nudge.s_adj_ci), ("s_raw", nudge.s_raw_ci)):
                if interval is not None:
                    gauge.labels(report.model, version, nudge.nudge, f"{quantity}_low").set(interval[0])
                    gauge.labels(report.model, version, nudge.nudge, f"{quantity}_high").set(interval[1])


def report_results(report: Report) -> list[Result]:
    """A round as results: per nudge type, S_raw, confusability, S_adj and its normalised form (label = the
    nudge type, evidence = the counts and intervals), and the plain accuracy."""
    round_id = f"probe-sycophancy-{report.model}-{int(time.time())}"
    method = f"sycophancy-probe/{report.settings.get('templates', 'default')}"
    common: dict[str, Any] = {"method": method, "model": report.model, "tenant": "probe"}
    counts = {"items": report.items, "k": report.k, "repeats": report.repeats, "reasks": report.reasks,
              "reasks_to_wrong": report.reasks_to_wrong, "errors": report.errors,
              "model_version": report.model_version}  # fmt: skip
    results = [Result(request_id=round_id, indicator="probe_accuracy_plain", score=report.accuracy_plain,
                      label="plain", evidence=[counts], **common)]  # fmt: skip
    for n in report.nudges:
        evidence = [{
            **counts, "nudge": n.nudge, "flipped": n.flipped, "s_raw_ci": n.s_raw_ci,
            "confusability_ci": n.confusability_ci, "s_adj_ci": n.s_adj_ci,
            "s_adj_normalised_ci": n.s_adj_normalised_ci, "accuracy": n.accuracy, "unparsed": n.unparsed,
        }]  # fmt: skip
        for indicator, value in (("sycophancy_raw", n.s_raw), ("sycophancy_confusability", n.confusability),
                                 ("sycophancy_adjusted", n.s_adj), ("sycophancy_adjusted_normalised",
                                                                    n.s_adj_normalised)):  # fmt: skip
            results.append(Result(request_id=f"{round_id}-{n.nudge}", indicator=indicator, score=value,
                                  label=n.nudge, evidence=evidence, **common))  # fmt: skip
    return results
