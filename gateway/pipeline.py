"""The evaluation pipeline as the gateway runs it: sampler -> queue -> (embedded judges) -> results store.

With a Redis URL, samples go to a Redis stream consumed by `medic-gateway worker` processes, and results
are read from Redis. Without one (the embedded default), the queue is in-process, judge workers run in
the gateway's own event loop, and results go to SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from gateway import privacy
from gateway.metrics import Metrics
from gateway.sampler import Sampler
from gateway.settings import GatewayConfig
from judges import registry
from judges.events import EvaluationEvents
from judges.events import configure as configure_events
from judges.metrics import JudgeMetrics
from judges.queue import MemoryQueue, RedisStreamQueue, SampleQueue
from judges.safety.schedule import SafetyProbeScheduler
from judges.sample import Sample
from judges.store import ResultStore, open_store
from judges.sycophancy.schedule import ProbeScheduler
from judges.worker import Decrypt, Worker, WorkerSettings


class Pipeline:
    def __init__(
        self, config: GatewayConfig, metrics: Metrics, redis_url: str | None = None,
        events: EvaluationEvents | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.redis_url = redis_url or _redis_url(config)
        self.queue: SampleQueue = open_queue(config, self.redis_url)
        self.store: ResultStore = open_store(self.redis_url, config.results.ttl_s, config.results.sqlite_path)
        self.sampler = Sampler(config.sampling, self.queue, metrics, config.queue.batch_size)
        metrics.sample_buffer.set_function(lambda: self.sampler.buffered)
        self.worker: Worker | None = None
        self.probes: list[ProbeScheduler | SafetyProbeScheduler] = []
        self._probe_tasks: list[asyncio.Task[None]] = []
        self.events = events or configure_events()
        if self.redis_url is None and config.worker.embedded:
            judges = registry.build(config.worker.judges, config.judging, config, embedded=True)
            judge_metrics = JudgeMetrics(metrics.registry)
            self.worker = Worker(self.queue, self.store, judges, judge_metrics,
                                 worker_settings(config), decrypt_for(config), consumer="embedded",
                                 on_results=self.events.emit)  # fmt: skip
            if config.probes.sycophancy is not None:
                self.probes.append(ProbeScheduler(config, self.store, judge_metrics, on_results=self.events.emit))
            if config.probes.safety is not None:
                self.probes.append(SafetyProbeScheduler(config, self.store, judge_metrics, on_results=self.events.emit))
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.sampler.start()
        if self.worker is not None:
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self.worker.run(self._stop), name="embedded-judges"),
                           loop.create_task(self.worker.watch_queue(self._stop), name="queue-gauges")]  # fmt: skip
        loop = asyncio.get_running_loop()  # probe tasks are cancelled on stop: a round is not worth waiting for
        self._probe_tasks = [loop.create_task(p.run(self._stop), name="probes") for p in self.probes]

    async def stop(self) -> None:
        await self.sampler.stop()
        self._stop.set()
        for task in self._probe_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.worker is not None:
            await self.worker.close()
        await self.queue.close()
        await self.store.close()
        self.events.shutdown()


def open_queue(config: GatewayConfig, redis_url: str | None) -> SampleQueue:
    q = config.queue
    if redis_url is None:
        return MemoryQueue(config.sampling.buffer_size)
    return RedisStreamQueue.from_url(
        redis_url, q.timeout_s, stream=q.stream, group=q.group, dead_letter_stream=q.dead_letter_stream,
        maxlen=q.maxlen, ttl_s=q.ttl_s, max_attempts=q.max_attempts,
    )  # fmt: skip


def worker_settings(config: GatewayConfig) -> WorkerSettings:
    return WorkerSettings(
        concurrency=config.worker.concurrency, read_count=config.queue.batch_size,
        claim_idle_ms=config.queue.claim_idle_ms, max_attempts=config.queue.max_attempts,
        drain_timeout_s=config.worker.drain_timeout_s,
    )  # fmt: skip


def decrypt_for(config: GatewayConfig) -> Decrypt | None:
    """Workers decrypt encrypted samples with the key the gateway encrypted them with."""
    if config.sampling.privacy != "encrypted" or not config.sampling.encryption_key_env:
        return None
    key = privacy.load_key(config.sampling.encryption_key_env)

    def decrypt(sample: Sample) -> Sample:
        return Sample.model_validate(privacy.decrypt(sample.model_dump(), key))

    return decrypt


def _redis_url(config: GatewayConfig) -> str | None:
    name = config.queue.redis_url_env
    return os.environ.get(name) or None if name else None
