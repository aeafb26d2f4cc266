"""Probe rounds on a timer, in the worker (or in the gateway when its judges run embedded): what every scheduled
probe (``judges.sycophancy.schedule``, ``judges.safety.schedule``) shares.

Every ``every_s`` each configured model gets one round through the configuration's upstream path. With several
workers on one Redis, a lock per probe, model and period (``medic:probe:<kind>:<model>:<period>``) makes exactly
one of them run it. A round loads the probe's data at its first try, runs the probe, stores the results, counts
the round (``medic_probe_rounds{probe, model, outcome}``), sets the probe's gauges and hands the results on (the
evaluation events). A round that fails is counted and logged by the exception's type alone (never its message,
which may quote a prompt), and the next period tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from config import GatewayConfig
from judges.metrics import JudgeMetrics
from pipeline.sample import Result
from pipeline.store import ResultStore

log = logging.getLogger(__name__)
Lock = Callable[[str, float], Awaitable[bool]]  # (key, ttl_s) -> whether this process holds it


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


class Timing(Protocol):
    """What the rounds read of a probe's section of ``config.probes``."""

    @property
    def models(self) -> list[str]: ...

    @property
    def every_s(self) -> float: ...


ProbeConfig = TypeVar("ProbeConfig", bound=Timing)
Data = TypeVar("Data")
Report = TypeVar("Report")


class ScheduledProbe(ABC, Generic[ProbeConfig, Data, Report]):
    """The round skeleton; a probe says where its configuration is, how it loads its data (once), how it runs
    one model, what results a report makes and which gauges it sets."""

    kind: ClassVar[str]  # the probe: its lock key, its label on medic_probe_rounds and its log lines

    def __init__(self, config: GatewayConfig, store: ResultStore, metrics: JudgeMetrics, lock: Lock = no_lock,
                 on_results: Callable[[list[Result]], None] | None = None) -> None:  # fmt: skip
        self.config = config
        self.probe: ProbeConfig = self.configured(config)
        self.store = store
        self.metrics = metrics
        self.lock = lock
        self.on_results = on_results
        self._data: Data | None = None
        self._log = logging.getLogger(type(self).__module__)

    @abstractmethod
    def configured(self, config: GatewayConfig) -> ProbeConfig:
        """This probe's section of ``config.probes`` (the scheduler is built only where there is one)."""

    @abstractmethod
    def load_data(self) -> Data:
        """What every round asks, loaded at the first round (and again after a round that failed to load it)."""

    @abstractmethod
    async def run_probe(self, model: str, data: Data) -> Report:
        """One round of the probe against ``model``."""

    @abstractmethod
    def results(self, report: Report) -> list[Result]:
        """A round's report as results (tenant ``probe``)."""

    @abstractmethod
    def observe(self, report: Report, results: list[Result]) -> None:
        """The probe's gauges from a completed round."""

    async def run(self, stop: asyncio.Event) -> None:
        await run_rounds(stop, self.probe.models, self.probe.every_s, self.round)

    async def round(self, model: str) -> Report | None:
        """One round for ``model`` unless another process holds this period's lock; failures are logged."""
        period = int(time.time() // self.probe.every_s)
        if not await self.lock(f"medic:probe:{self.kind}:{model}:{period}", self.probe.every_s):
            return None
        try:
            if self._data is None:
                self._data = self.load_data()
            report = await self.run_probe(model, self._data)
        except Exception as exc:  # a probe must never take the worker down; the next period tries again
            self.metrics.probe_rounds.labels(self.kind, model, "failed").inc()
            self._log.error("%s probe of %s failed: %s", self.kind, model, type(exc).__name__)
            return None
        results = self.results(report)
        await self.store.put(results)
        self.metrics.probe_rounds.labels(self.kind, model, "completed").inc()
        self.observe(report, results)
        if self.on_results is not None:
            self.on_results(results)
        return report
