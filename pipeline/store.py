"""Where judges keep their results and where the gateway reads them back: a store with a retention period.

Two implementations of one ``ResultStore`` contract:

* ``SQLiteStore``, the embedded default: one SQLite file (WAL mode), stdlib ``sqlite3`` run off the event loop.
* ``RedisStore``, for several gateways and workers sharing one store: a hash per request and a sorted-set index.

Common contract: a result is identified by ``(request_id, indicator, method)``; storing it again replaces it
(at-least-once delivery never double counts). A result whose ``created_at`` is older than ``ttl_s`` seconds
(by the store's clock) is expired: it is never returned, and the store deletes it sooner or later.
``indicator`` and ``method`` must not contain ``|`` (the Redis layout joins them with it).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.typing import EncodableT

from pipeline.sample import Result

MAX_LIMIT = 1000
PURGE_INTERVAL_S = 60.0
SEPARATOR = "|"

Clock = Callable[[], float]
T = TypeVar("T")


@dataclass(frozen=True)
class Query:
    """Which results to return: every field set must match (``None`` matches anything).

    ``min_score``/``max_score`` are inclusive bounds; when either is set, results with a null score are
    excluded. ``since`` (inclusive) and ``until`` (exclusive) bound ``Result.created_at`` in unix seconds.
    Results come newest first (``created_at`` descending), at most ``limit`` of them.
    Raises ``ValueError`` when ``limit`` is not in 1..1000.
    """

    model: str | None = None
    indicator: str | None = None
    method: str | None = None
    tenant: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")


def _matches(query: Query, result: Result) -> bool:
    """Whether ``result`` satisfies every field of ``query``, its time window included."""
    fields = (
        (query.model, result.model),
        (query.indicator, result.indicator),
        (query.method, result.method),
        (query.tenant, result.tenant),
    )
    return all(wanted is None or wanted == actual for wanted, actual in fields) and _in_ranges(query, result)


def _in_ranges(query: Query, result: Result) -> bool:
    if query.since is not None and result.created_at < query.since:
        return False
    if query.until is not None and result.created_at >= query.until:
        return False
    if query.min_score is None and query.max_score is None:
        return True
    return result.score is not None and _within(result.score, query.min_score, query.max_score)


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


class ResultStore(Protocol):
    async def put(self, results: list[Result]) -> None:
        """Store ``results``; one row per ``(request_id, indicator, method)``, a later put replacing it.

        Raises ``ValueError`` when an indicator or method contains ``|``.
        """
        ...

    async def get(self, request_id: str) -> list[Result]:
        """The unexpired results of one request, ordered by indicator then method; [] when none."""
        ...

    async def query(self, query: Query) -> list[Result]:
        """The unexpired results matching ``query``, newest first, at most ``query.limit``."""
        ...

    async def close(self) -> None:
        """Release the store's connection; the store is unusable afterwards. Closing twice is harmless."""
        ...


def open_store(url: str | None, ttl_s: float, sqlite_path: str | Path) -> ResultStore:
    """``redis://``, ``rediss://`` or ``unix://`` URL: a ``RedisStore`` on it; ``None``: ``SQLiteStore(sqlite_path)``.

    Raises ``ValueError`` for any other URL scheme.
    """
    if url is None:
        return SQLiteStore(sqlite_path, ttl_s)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(aioredis.from_url(url), ttl_s)
    raise ValueError(f"unsupported result store URL scheme: {url.split(':', 1)[0]!r}")


def _check(results: Iterable[Result]) -> None:
    for result in results:
        if SEPARATOR in result.indicator or SEPARATOR in result.method:
            raise ValueError(f"indicator and method must not contain {SEPARATOR!r}: {result.indicator!r}")


def _check_ttl(ttl_s: float) -> float:
    if not ttl_s > 0:
        raise ValueError(f"ttl_s must be positive, not {ttl_s}")
    return float(ttl_s)


def _by_key(results: Iterable[Result]) -> list[Result]:
    return sorted(results, key=lambda r: (r.indicator, r.method))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    request_id TEXT NOT NULL,
    indicator TEXT NOT NULL,
    method TEXT NOT NULL,
    model TEXT NOT NULL,
    tenant TEXT NOT NULL,
    score REAL,
    created_at REAL NOT NULL,
    result TEXT NOT NULL,
    PRIMARY KEY (request_id, indicator, method)
);
CREATE INDEX IF NOT EXISTS results_created_at ON results (created_at);
CREATE INDEX IF NOT EXISTS results_model ON results (model, created_at);
CREATE INDEX IF NOT EXISTS results_indicator ON results (indicator, created_at);
CREATE INDEX IF NOT EXISTS results_method ON results (method, created_at);
CREATE INDEX IF NOT EXISTS results_tenant ON results (tenant, created_at);
"""

_UPSERT = (
    "INSERT OR REPLACE INTO results (request_id, indicator, method, model, tenant, score, created_at, result)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    """Results in one SQLite file: a ``results`` table keyed by ``(request_id, indicator, method)``.

    Filterable fields are columns (indexed with ``created_at`` for the queries); ``result`` holds the whole
    Result as JSON, evidence included. One connection, guarded by a lock, used from worker threads
    (``asyncio.to_thread``), so the event loop never waits on the disk. Expired rows are filtered out of every
    read and deleted by a put at most once per ``purge_interval_s``.
    """

    def __init__(
        self,
        path: str | Path,
        ttl_s: float,
        *,
        clock: Clock = time.time,
        purge_interval_s: float = PURGE_INTERVAL_S,
    ) -> None:
        self.path = Path(path)
        self.ttl_s = _check_ttl(ttl_s)
        self.clock = clock
        self.purge_interval_s = purge_interval_s
        self._last_purge = -math.inf
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = self._connect()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(_SCHEMA)
        return connection

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._locked, work)

    def _locked(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._connection is None:
                raise RuntimeError("the result store is closed")
            return work(self._connection)

    async def put(self, results: list[Result]) -> None:
        _check(results)
        now = self.clock()
        purge_before = None
        if now - self._last_purge >= self.purge_interval_s:
            self._last_purge = now
            purge_before = now - self.ttl_s
        rows = [_row(result) for result in results]
        if rows or purge_before is not None:
            await self._run(lambda connection: _write(connection, rows, purge_before))

    async def get(self, request_id: str) -> list[Result]:
        sql = "SELECT result FROM results WHERE request_id = ? AND created_at >= ?"
        params = (request_id, self.clock() - self.ttl_s)
        return _by_key(await self._run(lambda connection: _select(connection, sql, params)))

    async def query(self, query: Query) -> list[Result]:
        sql, params = _query_sql(query, self.clock() - self.ttl_s)
        return await self._run(lambda connection: _select(connection, sql, params))

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


def _row(result: Result) -> tuple[Any, ...]:
    return (
        result.request_id,
        result.indicator,
        result.method,
        result.model,
        result.tenant,
        result.score,
        result.created_at,
        result.model_dump_json(),
    )


def _write(connection: sqlite3.Connection, rows: list[tuple[Any, ...]], purge_before: float | None) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany(_UPSERT, rows)
        if purge_before is not None:
            connection.execute("DELETE FROM results WHERE created_at < ?", (purge_before,))
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _select(connection: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[Result]:
    return [Result.model_validate_json(text) for (text,) in connection.execute(sql, params)]


def _query_sql(query: Query, expired_before: float) -> tuple[str, tuple[Any, ...]]:
    """The SELECT for ``query``: conditions on indexed columns, newest first, ties in a stable order."""
    since = expired_before if query.since is None else max(query.since, expired_before)
    conditions: list[tuple[str, Any]] = [("created_at >= ?", since)]
    optional = (
        ("model = ?", query.model),
        ("indicator = ?", query.indicator),
        ("method = ?", query.method),
        ("tenant = ?", query.tenant),
        ("score >= ?", query.min_score),
        ("score <= ?", query.max_score),
        ("created_at < ?", query.until),
    )
    conditions += [(sql, value) for sql, value in optional if value is not None]
    where = " AND ".join(sql for sql, _ in conditions)
    order = "created_at DESC, request_id DESC, indicator DESC, method DESC"
    sql = f"SELECT result FROM results WHERE {where} ORDER BY {order} LIMIT ?"
    return sql, (*(value for _, value in conditions), query.limit)


class RedisStore:
    """Results in Redis, shared by every gateway and worker that uses the same server and prefix.

    Layout: ``{prefix}:req:{request_id}`` is a hash with one field ``"{indicator}|{method}"`` per result, its
    value the Result JSON; each put re-arms its expiry to ``ttl_s``. ``{prefix}:index`` is a sorted set with a
    member ``"{request_id}|{indicator}|{method}"`` per result, scored by ``created_at``; each put removes its
    expired members and re-arms its expiry to ``ttl_s``, so it stays bounded by the retention period.
    A query walks the index newest first, fetches results by page (one pipeline per page), filters them in
    Python and removes the members whose result is gone. The store owns ``client``: ``close`` closes it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        ttl_s: float,
        prefix: str = "medic:results",
        *,
        clock: Clock = time.time,
        page_size: int = 200,
    ) -> None:
        self.client = client
        self.ttl_s = _check_ttl(ttl_s)
        self.prefix = prefix
        self.clock = clock
        self.page_size = page_size
        self.index_key = f"{prefix}:index"

    def request_key(self, request_id: str) -> str:
        return f"{self.prefix}:req:{request_id}"

    async def put(self, results: list[Result]) -> None:
        _check(results)
        if not results:
            return
        ttl_ms = max(1, math.ceil(self.ttl_s * 1000))
        async with self.client.pipeline(transaction=True) as pipe:
            for request_id, fields in _group(results).items():
                pipe.hset(self.request_key(request_id), mapping=fields)
                pipe.pexpire(self.request_key(request_id), ttl_ms)
            pipe.zadd(self.index_key, {_member(r): r.created_at for r in results})
            pipe.zremrangebyscore(self.index_key, "-inf", f"({self.clock() - self.ttl_s!r}")
            pipe.pexpire(self.index_key, ttl_ms)
            await pipe.execute()

    async def get(self, request_id: str) -> list[Result]:
        stored: dict[Any, Any] = await self.client.hgetall(self.request_key(request_id))
        expired_before = self.clock() - self.ttl_s
        results = (Result.model_validate_json(value) for value in stored.values())
        return _by_key(r for r in results if r.created_at >= expired_before)

    async def query(self, query: Query) -> list[Result]:
        expired_before = self.clock() - self.ttl_s
        since = expired_before if query.since is None else max(query.since, expired_before)
        cursor = _Cursor(f"({query.until!r}" if query.until is not None else "+inf")
        found: list[Result] = []
        stale: list[str] = []
        while len(found) < query.limit:
            page = await self._page(cursor, since)
            for member, result in await self._fetch([member for member, _ in page]):
                if result is None:
                    stale.append(member)
                elif result.created_at >= expired_before and _matches(query, result):
                    found.append(result)
            if len(page) < self.page_size:
                break
            cursor.advance([score for _, score in page])
        if stale:
            await self.client.zrem(self.index_key, *stale)
        return found[: query.limit]

    async def _page(self, cursor: _Cursor, since: float) -> list[tuple[str, float]]:
        page: Any = await self.client.zrevrangebyscore(
            self.index_key, cursor.max, since, start=cursor.offset, num=self.page_size, withscores=True
        )
        return [(_text(member), float(score)) for member, score in page]

    async def _fetch(self, members: list[str]) -> list[tuple[str, Result | None]]:
        """Each member with its Result, or None when its request's hash (or field) is gone."""
        if not members:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for member in members:
                request_id, field = _split(member)
                pipe.hget(self.request_key(request_id), field)
            values: list[Any] = await pipe.execute()
        return [(m, None if v is None else Result.model_validate_json(v)) for m, v in zip(members, values, strict=True)]

    async def close(self) -> None:
        await self.client.aclose()


class _Cursor:
    """Keyset pagination over the index, newest first: scores at most ``max``, skipping ``offset`` ties of it.

    Robust to members added or removed elsewhere in the index while a query walks it (offsets only count
    members sharing the cursor's score).
    """

    def __init__(self, maximum: str) -> None:
        self.max: str | float = maximum
        self.offset = 0

    def advance(self, scores: list[float]) -> None:
        """Move past a full page whose scores (descending) are ``scores``."""
        last = scores[-1]
        ties = sum(1 for score in scores if score == last)
        self.offset = self.offset + ties if last == self.max else ties
        self.max = last


def _member(result: Result) -> str:
    return SEPARATOR.join((result.request_id, result.indicator, result.method))


def _split(member: str) -> tuple[str, str]:
    """``"request_id|indicator|method"`` -> ``(request_id, "indicator|method")``; request ids may contain ``|``."""
    request_id, indicator, method = member.rsplit(SEPARATOR, 2)
    return request_id, f"{indicator}{SEPARATOR}{method}"


def _group(results: list[Result]) -> dict[str, dict[EncodableT, EncodableT]]:
    """Results by request id, each as the hash fields ``{"indicator|method": Result JSON}``."""
    grouped: dict[str, dict[EncodableT, EncodableT]] = {}
    for result in results:
        field = f"{result.indicator}{SEPARATOR}{result.method}"
        grouped.setdefault(result.request_id, {})[field] = result.model_dump_json()
    return grouped


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
