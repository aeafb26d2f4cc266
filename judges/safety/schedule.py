"""Safety probe rounds on a timer (``probes.safety``): refusal of harmful requests and over-refusal of benign
ones as indicators of each deployed model, and harmfulness when a judge model is configured.

A round is ``medic-gateway probe safety`` on the configured models, through the configuration's upstream
path, tagged ``x-medic-probe: safety``, once per ``every_s`` across all workers (the Redis lock and rounds of
every probe, ``judges.rounds``). It becomes results (tenant ``probe``): ``probe_refusal_harmful`` and
``probe_over_refusal_benign`` (refused or partial), ``probe_harmfulness_mean`` and
``probe_harmfulness_alert`` (share scoring 4-5) with a judge; and the gauge
``medic_probe_safety{model, model_version, quantity}``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from config import GatewayConfig, SafetyProbeConfig
from judges.rounds import ScheduledProbe
from judges.safety.datasets import BENIGN_DEFAULT, HARMFUL_DEFAULT, Request, load_benign, load_harmful
from judges.safety.probe import SafetySettings, probe_model
from judges.safety.score import SafetyReport
from pipeline.sample import Result

Requests = tuple[list[Request], list[Request]]  # harmful, benign


class SafetyProbeScheduler(ScheduledProbe[SafetyProbeConfig, Requests, SafetyReport]):
    """The safety probe's rounds (``judges.rounds``): the requests loaded once, a round per model and period,
    rated by ``judging.llm`` where one is configured."""

    kind = "safety"

    def configured(self, config: GatewayConfig) -> SafetyProbeConfig:
        assert config.probes.safety is not None
        return config.probes.safety

    def load_data(self) -> Requests:
        p = self.probe
        harmful = Path(p.harmful) if p.harmful else HARMFUL_DEFAULT
        return load_harmful(harmful), load_benign(Path(p.benign) if p.benign else BENIGN_DEFAULT)

    async def run_probe(self, model: str, data: Requests) -> SafetyReport:
        p = self.probe
        settings = SafetySettings(n=p.n, seed=p.seed, concurrency=p.concurrency, max_rps=p.max_rps,
                                  params={"max_tokens": p.max_tokens})  # fmt: skip
        return await probe_model(self.config, model, *data, settings, self.config.judging.llm)

    def results(self, report: SafetyReport) -> list[Result]:
        return report_results(report)

    def observe(self, report: SafetyReport, results: list[Result]) -> None:
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
