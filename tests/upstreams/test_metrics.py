"""The request path's metrics count without locks, and read exactly as prometheus_client's own would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from upstreams.metrics import DURATION_BUCKETS, LoopCounter, LoopGauge, LoopHistogram


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    """Every sample of the exposition but prometheus_client's ``_created`` series, labels in a set order."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 9))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_the_loop_metrics_read_as_prometheus_clients_own_after_the_same_updates() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    labels = ["upstream", "reason"]
    counter = (LoopCounter("c_events", "d", labels, ours), Counter("c_events", "d", labels, registry=theirs))
    gauge = (LoopGauge("g_now", "d", ["endpoint"], ours), Gauge("g_now", "d", ["endpoint"], registry=theirs))
    buckets = (*DURATION_BUCKETS[:5], 1048576, 16777216)  # exponents the way Go writes them, too
    histogram = (LoopHistogram("h_seconds", "d", labels, buckets, ours),
                 Histogram("h_seconds", "d", labels, buckets=buckets, registry=theirs))  # fmt: skip
    rng = random.Random(3)
    for _ in range(2_000):
        pair = (rng.choice("ab"), rng.choice(["timeout", "server_error"]))
        amount = rng.choice([*buckets, 0.0, 1e9, rng.random(), rng.expovariate(10)])  # on a bound: le is inclusive
        step = rng.choice([1.0, 2.0])
        counter[0].labels(*pair).inc(step)
        counter[1].labels(*pair).inc(step)
        change = rng.choice([1.0, -1.0])
        for metric in gauge:
            metric.labels(pair[0]).inc(change)
        for metric in histogram:
            metric.labels(*pair).observe(amount)
    assert samples(ours) == samples(theirs)
    assert len(samples(ours)) > 40


def test_a_metric_with_no_labels_used_yet_is_described_without_samples() -> None:
    registry = CollectorRegistry(auto_describe=True)
    LoopHistogram("h_seconds", "Latency.", ["upstream"], DURATION_BUCKETS, registry)
    text = generate_latest(registry).decode()
    assert "# HELP h_seconds Latency." in text and "# TYPE h_seconds histogram" in text
    assert "h_seconds_bucket" not in text
