"""The metrics of forwarding: one attempt's latency, retries and fallbacks, by upstream (docs/metrics.md).

The gateway registers them beside its own; a client that makes calls on its own account (probes, re-asks)
keeps them on a private registry, so that they are never counted as user traffic.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Bucket boundaries advised by the OpenTelemetry GenAI semantic conventions (v1.37.0).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

M = TypeVar("M", bound=MetricWrapperBase)


class Family(Generic[M]):
    """A labelled metric whose children are cached: on the hot path, labels() is one dict lookup.

    prometheus_client's own labels() validates and locks on every call; label values here are bounded, so
    the cache is too.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class ForwardingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.upstream_latency = Family(Histogram(
            "medic_gateway_upstream_latency_seconds",
            "One upstream attempt that got an answer: to the whole body, or to the first chunk of a stream.",
            ["upstream"], buckets=DURATION_BUCKETS, registry=r,
        ))  # fmt: skip
        self.retries = Family(Counter(
            "medic_gateway_upstream_retries",
            "Retries of upstream calls, by upstream and reason.",
            ["upstream", "reason"], registry=r,
        ))  # fmt: skip
        self.fallbacks = Family(Counter(
            "medic_gateway_fallbacks",
            "Requests moved to a model's next upstream, by model and the upstream given up on.",
            ["model", "upstream"], registry=r,
        ))  # fmt: skip
