"""The metrics of forwarding: one attempt's latency, retries and fallbacks, by upstream (docs/metrics.md).

The gateway registers them beside its own; a client that makes calls on its own account (probes, re-asks)
keeps them on a private registry, so that they are never counted as user traffic.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# Bucket boundaries advised by the OpenTelemetry GenAI semantic conventions (v1.37.0).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


C = TypeVar("C")


class _Loop(Collector, Generic[C]):
    """A labelled metric of the request path, counted in plain numbers and read by the registry at scrape time (a
    custom collector, prometheus_client's extension point for this).

    prometheus_client's own metrics take a lock on every update and validate labels on every ``labels()``: a
    dozen updates a request cost several microseconds. These are only ever updated from the event loop's thread
    and scraped from it, so they need no lock; ``labels()`` is one dict lookup (label values are bounded, so the
    children are too).
    """

    kind = ""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def _family(self) -> Metric:
        raise NotImplementedError


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class LoopCounter(_Loop[_Value]):
    def labels(self, *values: str) -> _Value:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Value()
        return child

    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class LoopGauge(LoopCounter):
    def _family(self) -> CounterMetricFamily | GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)


class _Buckets:
    """One histogram child: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bucket whose bound is >= amount
        self.sum += amount


class LoopHistogram(_Loop[_Buckets]):
    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:  # fmt: skip
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]

    def labels(self, *values: str) -> _Buckets:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = _Buckets(self.bounds)
        return child

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for values, child in list(self._children.items()):
            cumulative, total = [], 0
            for le, count in zip(self._les, list(child.counts), strict=True):
                total += count
                cumulative.append((le, float(total)))
            family.add_metric(values, cumulative, child.sum)
        yield family


class ForwardingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.upstream_latency = LoopHistogram(
            "medic_gateway_upstream_latency_seconds",
            "One upstream attempt that got an answer: to the whole body, or to the first chunk of a stream.",
            ["upstream"], DURATION_BUCKETS, r,
        )  # fmt: skip
        self.retries = LoopCounter(
            "medic_gateway_upstream_retries", "Retries of upstream calls, by upstream and reason.",
            ["upstream", "reason"], r,
        )  # fmt: skip
        self.fallbacks = LoopCounter(
            "medic_gateway_fallbacks",
            "Requests moved to a model's next upstream, by model and the upstream given up on.",
            ["model", "upstream"], r,
        )  # fmt: skip
