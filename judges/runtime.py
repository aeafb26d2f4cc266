"""The judges' runtime, assembled in one place: the worker over a queue and a results store, and the probe
schedulers of ``probes``. The embedded gateway (no Redis: one process) and ``medic-gateway worker`` (one of
many on a Redis stream) both build it here and differ only in what they pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from config import GatewayConfig
from judges import registry
from judges.events import EvaluationEvents
from judges.metrics import JudgeMetrics
from judges.rounds import Lock, no_lock
from judges.safety.schedule import SafetyProbeScheduler
from judges.sycophancy.schedule import ProbeScheduler
from judges.worker import Decrypt, Worker, WorkerSettings
from pipeline import privacy
from pipeline.queue import SampleQueue
from pipeline.sample import Sample
from pipeline.store import ResultStore

EMBEDDED = "embedded"  # the consumer name of the judges in the gateway's process


@dataclass
class JudgeRuntime:
    worker: Worker
    probes: list[ProbeScheduler | SafetyProbeScheduler]

    async def close(self) -> None:
        await self.worker.close()


def build_runtime(config: GatewayConfig, queue: SampleQueue, store: ResultStore, metrics: JudgeMetrics,
                  events: EvaluationEvents, *, consumer: str, lock: Lock | None = no_lock) -> JudgeRuntime:  # fmt: skip
    """The worker for ``worker.judges`` and a scheduler per configured probe.

    ``consumer``: this process's name in the queue's consumer group; ``EMBEDDED`` when the judges share the
    gateway's process (registry.build may then run CPU judges in-line).
    ``lock``: how processes agree which one runs a probe round (``no_lock`` when there is one process); None
    runs no probes, for a store the processes cannot share.
    """
    embedded = consumer == EMBEDDED
    judges = registry.build(config.worker.judges, config.judging, config, embedded=embedded)
    worker = Worker(queue, store, judges, metrics, worker_settings(config), decrypt_for(config),
                    consumer, on_results=events.emit)  # fmt: skip
    probes: list[ProbeScheduler | SafetyProbeScheduler] = []
    if lock is not None and config.probes.sycophancy is not None:
        probes.append(ProbeScheduler(config, store, metrics, lock, events.emit))
    if lock is not None and config.probes.safety is not None:
        probes.append(SafetyProbeScheduler(config, store, metrics, lock, events.emit))
    return JudgeRuntime(worker, probes)


def worker_settings(config: GatewayConfig) -> WorkerSettings:
    return WorkerSettings(
        concurrency=config.worker.concurrency, read_count=config.queue.batch_size,
        claim_idle_ms=config.queue.claim_idle_ms, max_attempts=config.queue.max_attempts,
        drain_timeout_s=config.worker.drain_timeout_s, judge_timeout_s=config.worker.judge_timeout_s,
    )  # fmt: skip


def decrypt_for(config: GatewayConfig) -> Decrypt | None:
    """Workers decrypt encrypted samples with the key the gateway encrypted them with."""
    if config.sampling.privacy != "encrypted" or not config.sampling.encryption_key_env:
        return None
    key = privacy.load_key(config.sampling.encryption_key_env)

    def decrypt(sample: Sample) -> Sample:
        return Sample.model_validate(privacy.decrypt(sample.model_dump(), key))

    return decrypt
