"""The sample queue between the gateway and the judges: Redis Streams, or in-process when embedded.

Redis: XADD, the stream capped at ``maxlen`` entries (and MINID trimming by age), one consumer group shared by every
worker (XREADGROUP), XACK only after the results are stored, pending entries of a dead worker reclaimed
once idle (XPENDING + XCLAIM), and entries delivered ``max_attempts`` times moved to a dead-letter stream.
Delivery is at least once; the results store is idempotent, so a redelivered sample is not counted twice.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from config import GatewayConfig

FIELD = b"s"
# XADD of every payload of a batch in one call, then the stream capped at ARGV[1] entries, oldest first. Acknowledged
# entries stay in a stream until trimmed, so a cap normally removes judged samples; the script returns how many of
# the entries it trimmed no worker of group ARGV[2] had read yet (overload: the judges are ``maxlen`` behind).
APPEND = """
for i = 3, #ARGV do
  redis.call('XADD', KEYS[1], '*', 's', ARGV[i])
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then
  return 0
end
local read = {0, 0}
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for j = 1, #group, 2 do fields[group[j]] = group[j + 1] end
  if fields['name'] == ARGV[2] then
    local ms, seq = string.match(fields['last-delivered-id'], '(%d+)-(%d+)')
    read = {tonumber(ms), tonumber(seq)}
  end
end
local unread = 0
for _, entry in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)) do
  local ms, seq = string.match(entry[1], '(%d+)-(%d+)')
  ms, seq = tonumber(ms), tonumber(seq)
  if ms > read[1] or (ms == read[1] and seq > read[2]) then unread = unread + 1 end
end
redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[1])
return unread
"""


class QueueUnavailable(Exception):
    """The queue cannot take or give samples now (Redis down or too slow); callers count and move on."""


@dataclass(slots=True, frozen=True)
class Delivery:
    id: str
    payload: bytes
    attempts: int  # how many times this entry has been delivered, this time included


@dataclass(slots=True, frozen=True)
class Depth:
    length: int  # entries in the stream (or queue)
    pending: int  # delivered, not yet acknowledged
    lag: int  # not yet delivered to any worker


class SampleQueue(Protocol):
    async def put(self, payloads: list[bytes]) -> int:
        """Queue all of ``payloads``; returns how many unread samples a full queue gave up for them (oldest first)."""
        ...

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]: ...

    async def ack(self, ids: list[str]) -> None: ...

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[Delivery]: ...

    async def renew(self, consumer: str, ids: list[str]) -> None: ...

    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...

    async def depth(self) -> Depth: ...

    async def close(self) -> None: ...


class RedisStreamQueue:
    def __init__(
        self,
        client: aioredis.Redis,
        stream: str,
        group: str,
        dead_letter_stream: str,
        maxlen: int,
        ttl_s: float,
        max_attempts: int,
    ) -> None:
        self.client = client
        self.stream = stream
        self.group = group
        self.dead_letter_stream = dead_letter_stream
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts
        self._group_ready = False
        self._trimmed_at = 0.0
        self._append = client.register_script(APPEND)
        self.max_block_ms = 1000  # a blocking read must end well inside the socket timeout (from_url sets it)

    @classmethod
    def from_url(cls, url: str, timeout_s: float, **options: Any) -> RedisStreamQueue:
        client = aioredis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
        )
        queue = cls(client, **options)
        queue.max_block_ms = max(1, int(timeout_s * 500))  # half the socket timeout: a quiet stream is not an error
        return queue

    async def put(self, payloads: list[bytes]) -> int:
        """Append a batch with one command: the gateway pays one round trip and one reply per batch. Returns how many
        unread samples the stream's cap pushed out (the oldest first)."""
        if not payloads:
            return 0
        try:
            trimmed = await self._append(keys=[self.stream], args=[self.maxlen, self.group, *payloads])
            await self._trim_by_age()
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc
        return int(trimmed)

    async def _trim_by_age(self) -> None:
        """Samples hold (pseudonymised) clinical text: none outlives ttl_s. Checked at most once a minute."""
        now = time.time()
        if now - self._trimmed_at < 60:
            return
        self._trimmed_at = now
        oldest = f"{int((now - self.ttl_s) * 1000)}-0"
        for stream in (self.stream, self.dead_letter_stream):
            await self.client.xtrim(stream, minid=oldest, approximate=True)

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        try:
            await self.ensure_group()
            reply: Any = await self.client.xreadgroup(
                self.group, consumer, {self.stream: ">"}, count=count, block=min(block_ms, self.max_block_ms)
            )
        except (RedisError, OSError) as exc:
            self._group_ready = False  # a restarted Redis may have lost the group
            raise QueueUnavailable(type(exc).__name__) from exc
        return [_delivery(entry_id, fields, 1) for _, entries in reply or [] for entry_id, fields in entries]

    async def ack(self, ids: list[str]) -> None:
        if ids:
            try:
                await self.client.xack(self.stream, self.group, *ids)
            except (RedisError, OSError) as exc:
                raise QueueUnavailable(type(exc).__name__) from exc

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries another worker left pending for idle_ms; dead-letter the ones tried too often."""
        try:
            await self.ensure_group()
            pending = await self.client.xpending_range(
                self.stream, self.group, min="-", max="+", count=count, idle=idle_ms
            )
            if not pending:
                return []
            attempts = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            claimed: Any = await self.client.xclaim(self.stream, self.group, consumer, idle_ms, list(attempts))
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc
        deliveries = []
        for entry_id, fields in claimed:
            if fields is None:  # trimmed away while pending: nothing left to evaluate
                await self.ack([_text(entry_id)])
                continue
            delivery = _delivery(entry_id, fields, attempts.get(_text(entry_id), 0) + 1)
            if delivery.attempts > self.max_attempts:
                await self.dead_letter(delivery, "max_attempts")
            else:
                deliveries.append(delivery)
        return deliveries

    async def renew(self, consumer: str, ids: list[str]) -> None:
        """Reset the idle time of entries this consumer is still working on, so that no other worker reclaims a batch
        that is only slow (XCLAIM JUSTID by the owner: the delivery count is not raised)."""
        if not ids:
            return
        try:
            entries: list[Any] = list(ids)
            await self.client.xclaim(self.stream, self.group, consumer, 0, entries, justid=True)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        try:
            await self.client.xadd(
                self.dead_letter_stream,
                {FIELD: delivery.payload, b"reason": reason, b"id": delivery.id, b"attempts": delivery.attempts},
                maxlen=self.maxlen,
                approximate=True,
            )
            await self.client.xack(self.stream, self.group, delivery.id)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc

    async def depth(self) -> Depth:
        try:
            await self.ensure_group()
            length = await self.client.xlen(self.stream)
            groups = await self.client.xinfo_groups(self.stream)
        except (RedisError, OSError) as exc:
            raise QueueUnavailable(type(exc).__name__) from exc
        for group in groups:
            if _text(group["name"]) == self.group:
                lag = group.get("lag")
                return Depth(length, int(group["pending"]), int(lag) if lag is not None else length)
        return Depth(length, 0, length)

    async def close(self) -> None:
        await self.client.aclose()


class MemoryQueue:
    """The embedded default: a bounded in-process queue feeding in-process workers (no redelivery)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize)
        self._pending = 0
        self._next = 0
        self.dead: list[tuple[Delivery, str]] = []

    async def put(self, payloads: list[bytes]) -> int:
        """All of ``payloads`` or none (QueueUnavailable when they do not all fit), so a retried put never repeats;
        the gateway's buffer holds them meanwhile."""
        if self._queue.maxsize and self._queue.qsize() + len(payloads) > self._queue.maxsize:
            raise QueueUnavailable("QueueFull")
        for payload in payloads:
            self._queue.put_nowait(payload)
        return 0

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        try:
            first = await asyncio.wait_for(self._queue.get(), block_ms / 1000)
        except TimeoutError:
            return []
        payloads = [first]
        while len(payloads) < count and not self._queue.empty():
            payloads.append(self._queue.get_nowait())
        self._pending += len(payloads)
        deliveries = []
        for payload in payloads:
            self._next += 1
            deliveries.append(Delivery(str(self._next), payload, 1))
        return deliveries

    async def ack(self, ids: list[str]) -> None:
        self._pending -= len(ids)

    async def reclaim(self, consumer: str, idle_ms: int, count: int) -> list[Delivery]:
        return []  # one process: nobody else can leave entries pending

    async def renew(self, consumer: str, ids: list[str]) -> None:
        return None  # nobody else could take them

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead = [*self.dead[-99:], (delivery, reason)]
        await self.ack([delivery.id])

    async def depth(self) -> Depth:
        return Depth(self._queue.qsize() + self._pending, self._pending, self._queue.qsize())

    async def close(self) -> None:
        return None


def _delivery(entry_id: Any, fields: dict[Any, Any], attempts: int) -> Delivery:
    payload = fields.get(FIELD) or fields.get("s") or b""
    return Delivery(_text(entry_id), payload if isinstance(payload, bytes) else str(payload).encode(), attempts)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def open_queue(config: GatewayConfig, redis_url: str | None) -> SampleQueue:
    """The Redis stream at ``redis_url``, or without one the in-process queue."""
    q = config.queue
    if redis_url is None:
        return MemoryQueue(config.sampling.buffer_size)
    return RedisStreamQueue.from_url(
        redis_url, q.timeout_s, stream=q.stream, group=q.group, dead_letter_stream=q.dead_letter_stream,
        maxlen=q.maxlen, ttl_s=q.ttl_s, max_attempts=q.max_attempts,
    )  # fmt: skip
