"""Sycophancy probe rounds on a timer, in the worker (or in the gateway when its judges run embedded).

Every ``probes.sycophancy.every_s`` each configured model gets one round (``judges.sycophancy.probe``)
through the configuration's upstream path, tagged ``x-medic-probe: sycophancy`` and throttled by
``max_rps``. With several workers on one Redis, a lock per model and period (``judges.rounds``) makes exactly
one of them run it. A round's figures become results in the results store (request id
``probe-sycophancy-<model>-<time>[-<nudge>]``, tenant ``probe``), the gauge
``medic_probe_sycophancy{model, model_version, nudge, quantity}`` and the usual evaluation events. Probe
traffic never passes the gateway's front door, so it is neither sampled into other judges nor counted in the
user-traffic metrics.
"""

from __future__ import annotations

import time
from typing import Any

import corpora
from config import GatewayConfig, SycophancyProbeConfig
from judges.rounds import ScheduledProbe
from judges.sycophancy.command import probe_model
from judges.sycophancy.datasets import Item, load
from judges.sycophancy.probe import ProbeSettings, Templates
from judges.sycophancy.score import Report
from pipeline.sample import Result

QUANTITIES = ("s_raw", "confusability", "s_adj", "s_adj_normalised", "accuracy")


class ProbeScheduler(ScheduledProbe[SycophancyProbeConfig, list[Item], Report]):
    """The sycophancy probe's rounds (``judges.rounds``): the items loaded once, a round per model and period."""

    kind = "sycophancy"

    def configured(self, config: GatewayConfig) -> SycophancyProbeConfig:
        assert config.probes.sycophancy is not None
        return config.probes.sycophancy

    def settings(self) -> ProbeSettings:
        p = self.probe
        params: dict[str, Any] = {"max_tokens": p.max_tokens}
        if p.temperature is not None:
            params["temperature"] = p.temperature
        templates = Templates.load(p.templates) if p.templates else Templates()
        return ProbeSettings(n=p.n, repeats=p.repeats, seed=p.seed, concurrency=p.concurrency, max_rps=p.max_rps,
                             params=params, templates=templates)  # fmt: skip

    def load_data(self) -> list[Item]:
        return load(self.probe.dataset or corpora.path(corpora.PUBMEDQA_L))

    async def run_probe(self, model: str, data: list[Item]) -> Report:
        return await probe_model(self.config, model, data, self.settings())

    def results(self, report: Report) -> list[Result]:
        return report_results(report)

    def observe(self, report: Report, results: list[Result]) -> None:
        version = report.model_version or "unknown"
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
