"""``queue``, ``results`` and ``worker``: where samples wait, where results are kept, how workers run."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from config.base import Strict


class QueueConfig(Strict):
    redis_url_env: str | None = None  # unset: the embedded in-process queue and workers
    stream: str = "medic:samples"
    group: str = "judges"
    dead_letter_stream: str = "medic:samples:dead"
    maxlen: Annotated[int, Field(gt=0)] = 100_000
    ttl_s: Annotated[float, Field(gt=0)] = 86_400.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    claim_idle_ms: Annotated[int, Field(gt=0)] = 10_000  # see docs/configuration.md: a live worker renews at 1/5
    batch_size: Annotated[int, Field(gt=0)] = 64
    timeout_s: Annotated[float, Field(gt=0)] = 1.0


class ResultsConfig(Strict):
    sqlite_path: str = "medic-results.sqlite3"
    ttl_s: Annotated[float, Field(gt=0)] = 30 * 86_400.0
    admin_key_env: str | None = None


class WorkerConfig(Strict):
    judges: list[str] = ["refusal", "fidelity"]
    concurrency: Annotated[int, Field(gt=0)] = 4
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    judge_timeout_s: Annotated[float, Field(gt=0)] = 600.0  # one judge on one batch; past it: failed, retried
    embedded: bool = True  # without Redis, run the judges inside the gateway process
