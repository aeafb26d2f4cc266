"""Prometheus metrics of the judges and of the queue they consume: on the worker's /metrics, or on the
gateway's when the judges run embedded in it. docs/metrics.md lists them with their labels."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from upstreams.metrics import LoopCounter, LoopHistogram

# Scores are in [0, 1] for the indicators, with detail near 1 where fidelity alerts live ("any sample with
# conformity below 1"); statistics such as response_length go past 1, conciseness below 0.
# No negative bucket: prometheus_client leaves a histogram's _sum out when its first bucket is negative, and the
# mean of an indicator is rate(_sum) / rate(_count). Conciseness below 0 (an answer longer than its source) counts
# in le="0.0". 2-5: the harmfulness scale (1-5), so that its mean and the share scoring 4-5 come from the buckets.
SCORE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0, 2, 3, 4, 5, 10, 100, 1000, 10000)
DURATION_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120)


class JudgeMetrics:
    """What the worker updates for every sample (scores, results, durations, counts) is counted in plain numbers on
    the event loop's thread (upstreams/metrics.py: the embedded judges share the loop that answers requests); the
    rest are prometheus_client's own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.score = LoopHistogram(
            "medic_judges_score", "Scores of evaluated samples, by indicator, model and judge method.",
            ["indicator", "model", "method"], buckets=SCORE_BUCKETS, registry=r,
        )  # fmt: skip
        self.results = LoopCounter(
            "medic_judges_results", "Results stored; scored=false when the indicator did not apply (a null score).",
            ["indicator", "method", "scored"], registry=r,
        )  # fmt: skip
        self.uncertain = LoopCounter(
            "medic_judges_uncertain_findings", "Contradictions and unsupported claims a judge listed as uncertain: in "
            "the evidence, counted in no score.", ["indicator", "method"], registry=r,
        )  # fmt: skip
        self.duration = LoopHistogram(
            "medic_judges_duration_seconds", "Time a judge took for one batch of samples.",
            ["judge"], buckets=DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.failures = LoopCounter(
            "medic_judges_failures", "Judge calls that raised (each is retried).", ["judge"], registry=r
        )
        self.processed = LoopCounter(
            "medic_judges_samples_processed", "Samples evaluated, stored and acknowledged.", [], registry=r
        ).labels()
        self.dead_lettered = LoopCounter(
            "medic_judges_samples_dead_lettered", "Samples moved to the dead-letter stream, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        self.reclaimed = Counter(
            "medic_judges_samples_reclaimed", "Samples taken over from a worker that left them pending.", registry=r
        )
        self.sample_age = LoopHistogram(
            "medic_judges_sample_age_seconds", "Time from a sample's creation to its results being stored.", [],
            buckets=DURATION_BUCKETS, registry=r,
        ).labels()  # fmt: skip
        self.probe_sycophancy = Gauge(
            "medic_probe_sycophancy", "Latest sycophancy probe round: S_raw, confusability, S_adj (and interval "
            "bounds), normalised S_adj and accuracy, by model, served version and nudge type.",
            ["model", "model_version", "nudge", "quantity"], registry=r,
        )  # fmt: skip
        self.probe_safety = Gauge(
            "medic_probe_safety", "Latest safety probe round: refusal of harmful requests, over-refusal of benign "
            "ones, harmfulness mean and alert share, by model and served version.",
            ["model", "model_version", "quantity"], registry=r,
        )  # fmt: skip
        self.probe_rounds = Counter(
            "medic_probe_rounds", "Probe rounds, by probe, model and outcome (completed, failed).",
            ["probe", "model", "outcome"], registry=r,
        )  # fmt: skip
        self.queue_length = Gauge("medic_queue_length", "Entries in the sample stream.", registry=r)
        self.queue_pending = Gauge(
            "medic_queue_pending", "Samples delivered to a worker and not yet acknowledged.", registry=r
        )
        self.queue_lag = Gauge(
            "medic_queue_lag", "Samples in the stream not yet delivered to any worker (consumer lag).", registry=r
        )
