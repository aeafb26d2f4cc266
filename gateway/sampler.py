"""Which exchanges go to the judges, and getting them there without the request path ever waiting.

The decision is made after the response has been sent: a rate per model, upstream and tenant (the most
specific configured match wins), deterministic on the request id so that every replica decides alike;
"always" triggers (a debugging header the configuration allows, a policy that flagged the exchange); and
a global budget in samples per second that sheds load before the queue. ``consider`` only appends to a
bounded buffer. A background task builds the samples and enqueues them in batches, in order. When the queue is
down the samples stay in the buffer (a batch whose put failed goes back to its front) and the shipper tries
again after a bounded, jittered backoff; samples are dropped only when the buffer is full, newest or oldest
first (``sampling.when_full``), counted by reason. ``stop`` ships what it holds within a deadline and counts
what it could not (reason "shutdown"). Pseudonymising a long clinical note costs
milliseconds of regular expressions, so it never runs in the event loop that answers requests: it runs in
a thread (the default; the interpreter hands the loop back at least every few milliseconds) or in a
separate encoder process (sampling.encoder: process; isolated, at the cost of a second interpreter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from config import SamplingConfig
from gateway.encoder import encode_batch, encoder_pool
from gateway.metrics import Metrics
from pipeline import privacy
from pipeline.queue import QueueUnavailable, SampleQueue
from pipeline.sample import SAMPLE_VERSION
from protocol.exchange import Exchange

log = logging.getLogger("medic_gateway.sampler")
SAMPLED_OPERATIONS = frozenset({"chat", "text_completion"})
SAMPLED = frozenset({"rate", "header", "policy"})  # the decisions that ship a sample
LINGER_S = 0.05  # let a batch gather before shipping: one queue round trip for many samples
MAX_BACKOFF_S = 5.0


class Sampler:
    def __init__(self, config: SamplingConfig, queue: SampleQueue, metrics: Metrics, batch_size: int = 64) -> None:
        self.config = config
        self.queue = queue
        self.metrics = metrics
        self.batch_size = batch_size
        self._rates: dict[tuple[str, str, str], float] = {}
        self._header = config.debug_header.lower().encode() if config.debug_header else None
        self._tokens = config.max_samples_per_s
        self._refilled = time.monotonic()
        self._buffer: deque[tuple[Exchange, str]] = deque()  # sampled exchanges, not yet encoded
        self._ready: deque[bytes] = deque()  # encoded samples waiting for the queue, oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._key = privacy.load_key(config.encryption_key_env) if config.encryption_key_env else None
        self._pool: ProcessPoolExecutor | None = None
        self._shipping = 0  # samples taken out of the buffers: being encoded, or in a put
        self._backoff_until = 0.0

    # -- the decision, in the request's task: cheap, never waits ----------------------------------------

    def consider(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        """Decide on one finished exchange and, when sampled, buffer it for the shipper."""
        trigger = self._trigger(ex, headers)
        self.metrics.sampling_decisions.labels(trigger or "not_sampled").inc()
        if trigger not in SAMPLED:
            return
        if self.buffered >= self.config.buffer_size:
            self.metrics.samples_dropped.labels("buffer_full").inc()
            if self.config.when_full == "drop_newest" or not (self._ready or self._buffer):
                return
            (self._ready or self._buffer).popleft()  # drop_oldest: the sample that waited longest goes
        self._buffer.append((ex, trigger))
        self._wake.set()

    def _trigger(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> str | None:
        if ex.status != 200 or ex.disconnected or ex.operation not in SAMPLED_OPERATIONS or ex.payload is None:
            return "not_applicable"
        if self._header is not None and any(k == self._header and v not in (b"", b"0") for k, v in headers):
            return "header"
        if ex.policy_flagged:
            return "policy"
        rate = self.rate(ex.model, ex.upstream, ex.tenant)
        if rate <= 0 or _fraction(ex.request_id) >= rate:
            return None
        return "rate" if self._take_token() else "over_budget"

    def rate(self, model: str, upstream: str, tenant: str) -> float:
        key = (model, upstream, tenant)
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = _most_specific(self.config, model, upstream, tenant)
        return rate

    def _take_token(self) -> bool:
        now = time.monotonic()
        capacity = max(1.0, self.config.max_samples_per_s)
        self._tokens = min(capacity, self._tokens + (now - self._refilled) * self.config.max_samples_per_s)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    # -- the shipper, a background task ----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._ship(), name="sample-shipper")

    async def stop(self, timeout_s: float = 5.0) -> int:
        """Ship what is buffered (within the timeout), then stop; returns how many samples could not be shipped
        (counted as dropped, reason "shutdown")."""
        if self._task is None:
            return 0
        deadline = time.monotonic() + timeout_s
        self._backoff_until = 0.0  # a queue that is back gets this stop's samples at once
        self._wake.set()
        while self.buffered and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        lost = self.buffered
        if lost:
            self.metrics.samples_dropped.labels("shutdown").inc(lost)
            log.error("stopping with %d samples the queue did not take in %.1fs: dropped", lost, timeout_s)
        return lost

    @property
    def buffered(self) -> int:
        """Samples held: waiting to be encoded, encoded and waiting for the queue, or in a put."""
        return len(self._buffer) + len(self._ready) + self._shipping

    async def _ship(self) -> None:
        backoff = 0.0
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_S)
            self._wake.clear()
            while self._buffer or self._ready:
                if not self._ready:
                    await self._encode_next()
                    continue
                batch = [self._ready.popleft() for _ in range(min(self.batch_size, len(self._ready)))]
                self._shipping = len(batch)
                try:
                    trimmed = await self.queue.put(batch)
                except QueueUnavailable as exc:
                    self._ready.extendleft(reversed(batch))  # back to the front, in order
                    self._shipping = 0
                    backoff = min(MAX_BACKOFF_S, backoff * 2 or 0.1)
                    self.metrics.sample_queue_errors.inc()
                    log.warning("sample queue unavailable (%s); holding %d samples, retrying within %.1fs", exc,
                                self.buffered, backoff)  # fmt: skip
                    await self._sleep(random.uniform(backoff / 2, backoff))  # jittered: replicas spread out
                    continue
                except BaseException:
                    self._ready.extendleft(reversed(batch))  # cancelled in a put: still held, for the count
                    raise
                finally:
                    self._shipping = 0
                backoff = 0.0
                self.metrics.samples_enqueued.inc(len(batch))
                if trimmed:  # the stream is at its cap with samples no worker has read: the oldest went
                    self.metrics.samples_dropped.labels("overload").inc(trimmed)

    async def _encode_next(self) -> None:
        """The next batch of the buffer, built, pseudonymised and encoded onto the ready queue."""
        batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
        self._shipping = len(batch)
        try:
            self._ready.extend(await self._encode([build_sample(ex, trigger) for ex, trigger in batch]))
        except BaseException:
            self._buffer.extendleft(reversed(batch))  # cancelled (a stop's deadline): still held, for the count
            raise
        finally:
            self._shipping = 0

    async def _sleep(self, seconds: float) -> None:
        """Wait out a backoff, or less when ``stop`` wants the samples shipped now."""
        self._backoff_until = time.monotonic() + seconds
        while time.monotonic() < self._backoff_until:
            await asyncio.sleep(min(0.05, max(0.0, self._backoff_until - time.monotonic())))

    async def _encode(self, samples: list[dict[str, Any]]) -> list[bytes]:
        """Privacy transformation and JSON, in a thread or in the encoder process."""
        if self.config.encoder == "thread":
            encoded = await asyncio.to_thread(encode_batch, samples, self.config.privacy, self._key)
        else:
            try:
                encoded = await asyncio.get_running_loop().run_in_executor(
                    self._encoder(), encode_batch, samples, self.config.privacy, self._key
                )
            except BrokenProcessPool:  # the encoder died (killed, out of memory): a new one next batch
                log.error("sample encoder process died; %d samples dropped", len(samples))
                self._pool = None
                encoded = [None] * len(samples)
        failed = encoded.count(None)
        if failed:
            self.metrics.samples_dropped.labels("privacy_error").inc(failed)
        return [payload for payload in encoded if payload is not None]

    def _encoder(self) -> ProcessPoolExecutor:
        if self._pool is None:  # started on the first sample: a gateway that never samples never pays for it
            self._pool = encoder_pool(1)
        return self._pool


def build_sample(ex: Exchange, trigger: str) -> dict[str, Any]:
    """The Sample (pipeline/sample.py) of a finished exchange, before any privacy transformation."""
    reasons = ex.finish_reasons
    choices = [
        {"index": i, "content": text, "finish_reason": reasons[i] if i < len(reasons) else None}
        for i, text in enumerate(ex.output)
    ]
    return {
        "version": SAMPLE_VERSION, "request_id": ex.request_id, "traceparent": ex.traceparent, "task": ex.task,
        "created_at": time.time(), "operation": ex.operation, "model": ex.model, "upstream": ex.upstream,
        "upstream_model": ex.upstream_model, "provider": ex.provider, "tenant": ex.tenant, "stream": ex.stream,
        "status": ex.status, "error_type": ex.error_type, "trigger": trigger, "privacy": "raw", "policy": ex.policy,
        "timings": {"duration_s": ex.finished_s, "upstream_s": ex.upstream_wait_s, "first_token_s": ex.first_token_s},
        "request": ex.payload or {},
        "response": {"choices": choices, "usage": ex.usage, "model": ex.response_model},
    }  # fmt: skip


def _fraction(request_id: str) -> float:
    """A stable number in [0, 1) from the request id: every replica samples the same requests."""
    return zlib.crc32(request_id.encode()) / 4_294_967_296


def _most_specific(config: SamplingConfig, model: str, upstream: str, tenant: str) -> float:
    best, best_keys = config.rate, 0
    for entry in config.rates:
        wanted = (entry.model, entry.upstream, entry.tenant)
        if any(w is not None and w != v for w, v in zip(wanted, (model, upstream, tenant), strict=True)):
            continue
        keys = sum(w is not None for w in wanted)
        if keys >= best_keys:
            best, best_keys = entry.rate, keys
    return best
