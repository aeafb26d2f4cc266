"""The evaluation pipeline as the gateway runs it: sampler -> queue -> (embedded judges) -> results store.

With a Redis URL, samples go to a Redis stream consumed by `medic-gateway worker` processes, and results
are read from Redis. Without one (the embedded default), the queue is in-process, the judges' runtime
(judges/runtime.py, the same one the worker builds) runs in the gateway's own event loop, and results go to
SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from config import GatewayConfig
from gateway.metrics import Metrics
from gateway.sampler import Sampler
from judges.events import EvaluationEvents
from judges.events import configure as configure_events
from judges.metrics import JudgeMetrics
from judges.runtime import EMBEDDED, JudgeRuntime, build_runtime
from pipeline.queue import SampleQueue, open_queue
from pipeline.store import ResultStore, open_store


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
        self.events = events or configure_events()
        self.judges: JudgeRuntime | None = None
        if self.redis_url is None and config.worker.embedded:
            self.judges = build_runtime(config, self.queue, self.store, JudgeMetrics(metrics.registry), self.events,
                                        consumer=EMBEDDED)  # fmt: skip
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.sampler.start()
        if self.judges is None:
            return
        loop = asyncio.get_running_loop()
        worker = self.judges.worker
        self._tasks = [loop.create_task(worker.run(self._stop), name="embedded-judges"),
                       loop.create_task(worker.watch_queue(self._stop), name="queue-gauges")]  # fmt: skip
        # probe tasks are cancelled on stop: a round is not worth waiting for
        self._probe_tasks = [loop.create_task(p.run(self._stop), name="probes") for p in self.judges.probes]

    async def stop(self) -> None:
        await self.sampler.stop(self.config.sampling.drain_timeout_s)
        self._stop.set()
        for task in self._probe_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.judges is not None:
            await self.judges.close()
        await self.queue.close()
        await self.store.close()
        self.events.shutdown()


def _redis_url(config: GatewayConfig) -> str | None:
    name = config.queue.redis_url_env
    return os.environ.get(name) or None if name else None
