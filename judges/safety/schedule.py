"""Safety probe rounds on a timer (``probes.safety``): refusal of harmful requests and over-refusal of benign
ones as indicators of each deployed model, and harmfulness when a judge model is configured.

A round is ``medic-gateway probe safety`` on the configured models, through the configuration's upstream
path, tagged ``x-medic-probe: safety``, once per ``every_s`` across all workers (the same Redis lock as the
sycophancy rounds). It becomes results (tenant ``probe``): ``probe_refusal_harmful`` and
``probe_over_refusal_benign`` (refused or partial), ``probe_harmfulness_mean`` and
``probe_harmfulness_alert`` (share scoring 4-5) with a judge; and the gauge
``medic_probe_safety{model, model_version, quantity}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from config import GatewayConfig, SafetyProbeConfig
from judges.metrics import JudgeMetrics
from judges.safety.probe_safety import (
    BENIGN_DEFAULT,
    HARMFUL_DEFAULT,
    Request,
    SafetyReport,
    SafetySettings,
    load_benign,
    load_harmful,
    probe_model,
)
from judges.sycophancy.schedule import Lock, no_lock, run_rounds
from pipeline.sample import Result
from pipeline.store import ResultStore

log = logging.getLogger(__name__)


class SafetyProbeScheduler:
    def __init__(self, config: GatewayConfig, store: ResultStore, metrics: JudgeMetrics, lock: Lock = no_lock,
                 on_results: Callable[[list[Result]], None] | None = None) -> None:  # fmt: skip
        assert config.probes.safety is not None
        self.config = config
        self.probe: SafetyProbeConfig = config.probes.safety
        self.store = store
        self.metrics = metrics
        self.lock = lock
        self.on_results = on_results
        self._requests: tuple[list[Request], list[Request]] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        await run_rounds(stop, self.probe.models, self.probe.every_s, self.round)

    async def round(self, model: str) -> SafetyReport | None:
        period = int(time.time() // self.probe.every_s)
        if not await self.lock(f"medic:probe:safety:{model}:{period}", self.probe.every_s):
            return None
        try:
            if self._requests is None:
                p = self.probe
                harmful = Path(p.harmful) if p.harmful else HARMFUL_DEFAULT
                self._requests = load_harmful(harmful), load_benign(Path(p.benign) if p.benign else BENIGN_DEFAULT)
            p = self.probe
            settings = SafetySettings(n=p.n, seed=p.seed, concurrency=p.concurrency, max_rps=p.max_rps,
                                      params={"max_tokens": p.max_tokens})  # fmt: skip
            report = await probe_model(self.config, model, *self._requests, settings, self.config.judging.llm)
        except Exception as exc:  # a probe must never take the worker down; the next period tries again
            self.metrics.probe_rounds.labels("safety", model, "failed").inc()
            log.error("safety probe of %s failed: %s", model, type(exc).__name__)
            return None
        results = report_results(report)
        await self.store.put(results)
        self._observe(report, results)
        if self.on_results is not None:
            self.on_results(results)
        return report

    def _observe(self, report: SafetyReport, results: list[Result]) -> None:
        self.metrics.probe_rounds.labels("safety", report.model, "completed").inc()
        version = report.model_version or "unknown"
        for result in results:
            if result.score is not None:
                quantity = result.indicator.removeprefix("probe_")
                self.metrics.probe_safety.labels(report.model, version, quantity).set(result.score)


def report_results(report: SafetyReport) -> list[Result]:
    """A round as results, with the counts and intervals as evidence."""
    round_id = f"probe-safety-{report.model}-{int(time.time())}"
    method = f"safety-probe/{report.judge_method or 'rules'}"
    common: dict[str, Any] = {"request_id": round_id, "method": method, "model": report.model, "tenant": "probe"}
    harmful, benign = report.harmful, report.benign
    rows: list[tuple[str, float | None, dict[str, Any]]] = [
        ("probe_refusal_harmful", harmful.refused_or_partial.rate,
         {"k": harmful.refused_or_partial.k, "n": harmful.refused_or_partial.n, "ci": harmful.refused_or_partial.ci}),
        ("probe_over_refusal_benign", benign.refused_or_partial.rate,
         {"k": benign.refused_or_partial.k, "n": benign.refused_or_partial.n, "ci": benign.refused_or_partial.ci}),
    ]  # fmt: skip
    if harmful.harm is not None:
        harm = harmful.harm
        alert = {"k": harm.alert.k, "n": harm.alert.n, "ci": harm.alert.ci}
        rows += [("probe_harmfulness_mean", harm.mean, {"rated": harm.rated, "ci": harm.mean_ci}),
                 ("probe_harmfulness_alert", harm.alert.rate, alert)]  # fmt: skip
    version = {"model_version": report.model_version}
    return [Result(indicator=name, score=value, label="probe", evidence=[{**evidence, **version}], **common)
            for name, value, evidence in rows]  # fmt: skip
