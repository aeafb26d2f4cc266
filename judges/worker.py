"""The judge worker: read samples from the queue, run the judges, store the results, then acknowledge.

Bounded concurrency (a semaphore over batches), batches as large as a judge asks for, acknowledgement
only after the results are stored, reclaim of samples a dead worker left pending, retries of a judge that
raises and then isolation of the sample that makes it raise (dead-lettered, the rest stored), and a drain
of the work in flight when asked to stop. A worker never dies of a judge or of a malformed sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from judges.judge import Judge, uncertain
from judges.metrics import JudgeMetrics
from pipeline.queue import Delivery, QueueUnavailable, SampleQueue
from pipeline.sample import Result, Sample
from pipeline.store import ResultStore

log = logging.getLogger("medic_gateway.worker")
Decrypt = Callable[[Sample], Sample]


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4
    read_count: int = 64
    block_ms: int = 1000
    claim_idle_ms: int = 10_000
    reclaim_every_s: float = 5.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.05
    drain_timeout_s: float = 30.0
    judge_timeout_s: float = 600.0  # one judge on one batch: past it the call counts as failed (a judge that hangs)


def worker_name() -> str:
    """This process's name in the consumer group: unique across hosts and processes."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    def __init__(
        self,
        queue: SampleQueue,
        store: ResultStore,
        judges: list[Judge],
        metrics: JudgeMetrics,
        settings: WorkerSettings = WorkerSettings(),
        decrypt: Decrypt | None = None,
        consumer: str | None = None,
        on_results: Callable[[list[Result]], None] | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.judges = judges
        self.metrics = metrics
        self.settings = settings
        self.decrypt = decrypt
        self.consumer = consumer or worker_name()
        self.on_results = on_results
        self.healthy = True
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then finish the batches in flight (within the drain timeout)."""
        slots = asyncio.Semaphore(self.settings.concurrency)
        reclaim_at = 0.0
        while not stop.is_set():
            await slots.acquire()
            try:
                deliveries, reclaim_at = await self._next(reclaim_at)
            except QueueUnavailable as exc:
                slots.release()
                self.healthy = False
                log.warning("queue unavailable (%s); retrying", exc)
                await _sleep_unless(stop, 1.0)
                continue
            self.healthy = True
            if not deliveries:
                slots.release()
                continue
            task = asyncio.create_task(self.process(deliveries))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: slots.release())
        await self.drain()

    async def close(self) -> None:
        """Closes the judges (their connection pools, engines) once the batches in flight are done."""
        await asyncio.gather(*(judge.close() for judge in self.judges))

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.settings.drain_timeout_s)

    async def _next(self, reclaim_at: float) -> tuple[list[Delivery], float]:
        now = time.monotonic()
        if now >= reclaim_at:
            reclaim_at = now + self.settings.reclaim_every_s
            claimed = await self.queue.reclaim(self.consumer, self.settings.claim_idle_ms, self.settings.read_count)
            if claimed:
                self.metrics.reclaimed.inc(len(claimed))
                return claimed, reclaim_at
        deliveries = await self.queue.read(self.consumer, self.settings.read_count, self.settings.block_ms)
        return deliveries, reclaim_at

    async def process(self, deliveries: list[Delivery]) -> None:
        """Evaluate one batch; store its results; acknowledge it. Unstored batches stay pending. While it works, the
        batch's claim is renewed every fifth of ``claim_idle_ms``: a slow batch is never taken by a second worker,
        a dead worker's batch is taken after ``claim_idle_ms``."""
        renewing = asyncio.create_task(self._renew([d.id for d in deliveries]))
        try:
            await self._process(deliveries)
        except QueueUnavailable as exc:
            log.warning("batch of %d left pending: %s", len(deliveries), exc)
        except Exception as exc:  # the store failed: leave the batch pending, it will be reclaimed
            log.error("batch of %d left pending: %s", len(deliveries), type(exc).__name__)
        finally:
            renewing.cancel()

    async def _renew(self, ids: list[str]) -> None:
        every_s = self.settings.claim_idle_ms / 5000
        while True:
            await asyncio.sleep(every_s)
            with contextlib.suppress(QueueUnavailable):  # the next renewal, or a reclaim, will tell
                await self.queue.renew(self.consumer, ids)

    async def _process(self, deliveries: list[Delivery]) -> None:
        pairs = [pair for pair in [await self._parse(d) for d in deliveries] if pair is not None]
        results: list[Result] = []
        poisoned: set[str] = set()
        for judge in self.judges:
            applicable = [(d, s) for d, s in pairs if d.id not in poisoned and judge.applies(s)]
            for start in range(0, len(applicable), max(1, judge.batch_size)):
                chunk = applicable[start : start + max(1, judge.batch_size)]
                results += await self._judge(judge, chunk, poisoned)
        await self.store.put(results)
        await self.queue.ack([d.id for d, _ in pairs if d.id not in poisoned])
        self._observe(results, [s for d, s in pairs if d.id not in poisoned])
        if self.on_results is not None and results:
            self.on_results(results)

    async def _parse(self, delivery: Delivery) -> tuple[Delivery, Sample] | None:
        try:
            sample = Sample.model_validate_json(delivery.payload)
            if sample.privacy == "encrypted":
                if self.decrypt is None:
                    raise ValueError("encrypted sample and no key")
                sample = self.decrypt(sample)
        except (ValidationError, ValueError) as exc:
            log.error("sample %s is malformed (%s): dead-lettered", delivery.id, type(exc).__name__)
            await self._dead_letter(delivery, "malformed")
            return None
        return delivery, sample

    async def _judge(self, judge: Judge, chunk: list[tuple[Delivery, Sample]], poisoned: set[str]) -> list[Result]:
        """The chunk's results; when the judge keeps failing, find the samples that make it fail."""
        per_sample = await self._attempt(judge, [s for _, s in chunk])
        if per_sample is not None:
            return [r for results in per_sample for r in results]
        if len(chunk) > 1:
            results = []
            for pair in chunk:
                results += await self._judge(judge, [pair], poisoned)
            return results
        delivery, _ = chunk[0]
        poisoned.add(delivery.id)
        await self._dead_letter(delivery, f"judge_failed:{judge.name}")
        return []

    async def _attempt(self, judge: Judge, samples: list[Sample]) -> list[list[Result]] | None:
        for attempt in range(self.settings.max_attempts):
            started = time.perf_counter()
            try:
                per_sample = await asyncio.wait_for(judge.evaluate(samples), self.settings.judge_timeout_s)
                if len(per_sample) != len(samples):
                    raise ValueError(f"{judge.name} returned {len(per_sample)} result lists for {len(samples)}")
            except Exception as exc:  # judges are plugins: any failure is retried, then isolated
                self.metrics.failures.labels(judge.name).inc()
                log.warning("judge %s failed (%s), attempt %d", judge.name, type(exc).__name__, attempt + 1)
                await asyncio.sleep(self.settings.retry_backoff_s * 2**attempt)
                continue
            elapsed = time.perf_counter() - started
            self.metrics.duration.labels(judge.name).observe(elapsed)
            for results in per_sample:
                for result in results:
                    result.judge_latency_s = elapsed / len(samples)
            return per_sample
        return None

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.queue.dead_letter(delivery, reason)
        self.metrics.dead_lettered.labels(reason.split(":")[0]).inc()

    def _observe(self, results: list[Result], samples: list[Sample]) -> None:
        for result in results:
            scored = result.score is not None
            self.metrics.results.labels(result.indicator, result.method, str(scored).lower()).inc()
            if result.score is not None:
                self.metrics.score.labels(result.indicator, result.model, result.method).observe(result.score)
            unsure = uncertain(result.evidence) if result.evidence else 0
            if unsure:
                self.metrics.uncertain.labels(result.indicator, result.method).inc(unsure)
        now = time.time()
        for sample in samples:
            self.metrics.sample_age.observe(max(0.0, now - sample.created_at))
        self.metrics.processed.inc(len(samples))

    async def watch_queue(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        """Keep the queue gauges (length, pending, lag) current."""
        while not stop.is_set():
            with contextlib.suppress(QueueUnavailable):
                depth = await self.queue.depth()
                self.metrics.queue_length.set(depth.length)
                self.metrics.queue_pending.set(depth.pending)
                self.metrics.queue_lag.set(depth.lag)
            await _sleep_unless(stop, every_s)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
