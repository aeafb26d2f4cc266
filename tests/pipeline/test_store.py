"""Result stores: the same contract tested on SQLite (a temporary file) and on a real redis-server.

Time is a fake clock the test moves, so expiry is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from pipeline.sample import Result
from pipeline.store import Query, RedisStore, ResultStore, SQLiteStore, open_store

T0 = 1_700_000_000.0
TTL = 3600.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(request_id: str, **fields: Any) -> Result:
    values: dict[str, Any] = {
        "indicator": "refusal",
        "method": "refusal-rules/1",
        "model": "gpt-a",
        "score": 1.0,
        "created_at": T0,
        **fields,
    }
    return Result(request_id=request_id, **values)


def ids(results: list[Result]) -> list[str]:
    return [r.request_id for r in results]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_client(redis_server: Any) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[ResultStore]:
    made: ResultStore
    if request.param == "sqlite":
        made = SQLiteStore(tmp_path / "results.db", TTL, clock=clock)
    else:
        server = request.getfixturevalue("redis_server")
        made = RedisStore(aioredis.from_url(server.url), TTL, clock=clock)
    yield made
    await made.close()


@pytest.fixture
async def redis_store(redis_client: aioredis.Redis, clock: FakeClock) -> RedisStore:
    return RedisStore(redis_client, TTL, prefix="test:results", clock=clock)


# --- put and get


async def test_put_get_round_trip_keeps_every_field(store: ResultStore) -> None:
    evidence: list[Any] = [{"span": [3, 17], "text": "I can't help"}, "rule:apology", 0.5, None]
    stored = [
        result("r1", indicator="safety", method="cef-llm/judge/abc", score=None, label="n/a", evidence=evidence),
        result("r1", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", tenant="ward-7", judge_latency_s=0.25),
        result("r2"),
    ]
    await store.put(stored)
    assert await store.get("r1") == [stored[1], stored[0]]  # ordered by indicator, then method
    assert await store.get("r2") == [stored[2]]
    assert await store.get("unknown") == []


async def test_put_is_idempotent_and_a_later_put_replaces(store: ResultStore) -> None:
    first = result("r1", score=0.2)
    await store.put([first])
    await store.put([first, first])
    assert await store.get("r1") == [first]
    assert await store.query(Query()) == [first]
    again = result("r1", score=0.9, label="retried")
    await store.put([again])
    assert await store.get("r1") == [again]
    assert await store.query(Query()) == [again]


async def test_same_indicator_by_two_methods_is_two_rows(store: ResultStore) -> None:
    rules, llm = result("r1", method="refusal-rules/1"), result("r1", method="cef-llm/j/1")
    await store.put([rules, llm])
    assert await store.get("r1") == [llm, rules]


async def test_put_of_nothing_is_harmless(store: ResultStore) -> None:
    await store.put([])
    assert await store.query(Query()) == []


async def test_a_separator_in_indicator_or_method_is_refused(store: ResultStore) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        await store.put([result("r1", indicator="a|b")])
    with pytest.raises(ValueError, match="must not contain"):
        await store.put([result("r1", method="m|1")])
    assert await store.get("r1") == []


async def test_request_ids_may_contain_the_separator(store: ResultStore) -> None:
    piped = result("tenant|r|1")
    await store.put([piped])
    assert await store.get("tenant|r|1") == [piped]
    assert await store.query(Query(indicator="refusal")) == [piped]


async def test_concurrent_puts_all_land(store: ResultStore) -> None:
    await asyncio.gather(*(store.put([result(f"r{i}", created_at=T0 - i)]) for i in range(20)))
    assert ids(await store.query(Query())) == [f"r{i}" for i in range(20)]


# --- query

DATASET = [  # newest first; created_at T0 - i for the i-th
    result("a", model="gpt-a", indicator="refusal", method="rules/1", tenant="ward-1", score=1.0),
    result("b", model="gpt-b", indicator="refusal", method="rules/1", tenant="ward-2", score=0.0),
    result("c", model="gpt-a", indicator="hallucination", method="llm/1", tenant="ward-1", score=0.5),
    result("d", model="gpt-a", indicator="hallucination", method="llm/1", tenant="ward-2", score=None),
    result("e", model="gpt-b", indicator="hallucination", method="llm/2", tenant="ward-1", score=0.75),
    result("f", model="gpt-a", indicator="refusal", method="llm/2", tenant="ward-1", score=0.25),
]
DATASET = [r.model_copy(update={"created_at": T0 - i}) for i, r in enumerate(DATASET)]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (Query(), "abcdef"),
        (Query(model="gpt-b"), "be"),
        (Query(indicator="hallucination"), "cde"),
        (Query(method="llm/2"), "ef"),
        (Query(tenant="ward-2"), "bd"),
        (Query(min_score=0.5), "ace"),
        (Query(max_score=0.5), "bcf"),
        (Query(min_score=0.25, max_score=0.75), "cef"),
        (Query(min_score=0.0), "abcef"),  # a null score is outside every score range
        (Query(max_score=1.0), "abcef"),
        (Query(since=T0 - 3), "abcd"),  # inclusive
        (Query(until=T0 - 1), "cdef"),  # exclusive
        (Query(since=T0 - 4, until=T0 - 1), "cde"),
        (Query(model="gpt-a", indicator="hallucination"), "cd"),
        (Query(model="gpt-a", tenant="ward-1", min_score=0.3), "ac"),
        (Query(indicator="refusal", method="llm/2", tenant="ward-1", max_score=0.5), "f"),
        (Query(model="gpt-a", since=T0 - 2, until=T0 + 1, max_score=0.9), "c"),
        (Query(model="gpt-c"), ""),
        (Query(since=T0 + 1), ""),
        (Query(limit=2), "ab"),
        (Query(indicator="hallucination", limit=2), "cd"),
        (Query(model="gpt-a", min_score=0.0, limit=1), "a"),
    ],
    ids=repr,
)
async def test_query_filters_newest_first(store: ResultStore, query: Query, expected: str) -> None:
    await store.put(list(reversed(DATASET)))
    assert ids(await store.query(query)) == list(expected)


async def test_query_results_are_whole(store: ResultStore) -> None:
    await store.put(DATASET)
    assert await store.query(Query()) == DATASET


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_query_limit_is_bounded(limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        Query(limit=limit)


async def test_query_limit_with_sparse_matches_across_pages(store: ResultStore) -> None:
    many = [result(f"r{i:03}", created_at=T0 - i, indicator="rare" if i % 7 == 0 else "common") for i in range(700)]
    await store.put(many)
    wanted = [r.request_id for r in many if r.indicator == "rare"]
    assert ids(await store.query(Query(indicator="rare", limit=60))) == wanted[:60]
    assert ids(await store.query(Query(indicator="rare", limit=1000))) == wanted
    assert len(await store.query(Query(limit=1000))) == 700


async def test_query_returns_every_result_sharing_one_timestamp(store: ResultStore) -> None:
    await store.put([result(f"r{i:03}") for i in range(450)])  # more ties than a Redis page
    found = ids(await store.query(Query(limit=1000)))
    assert sorted(found) == [f"r{i:03}" for i in range(450)]


# --- retention


async def test_expired_results_are_never_returned(store: ResultStore, clock: FakeClock) -> None:
    await store.put(
        [result("old", created_at=T0 - 10), result("edge", created_at=T0), result("new", created_at=T0 + 5)]
    )
    clock.now = T0 + TTL  # "edge" is exactly ttl old: still kept
    assert ids(await store.query(Query())) == ["new", "edge"]
    assert await store.get("old") == []
    assert ids(await store.get("edge")) == ["edge"]
    clock.now = T0 + TTL + 1
    assert ids(await store.query(Query())) == ["new"]
    assert ids(await store.query(Query(since=T0 - 100))) == ["new"]
    assert await store.get("edge") == []
    clock.now = T0 + TTL + 10
    assert await store.query(Query()) == []


async def test_sqlite_purges_expired_rows_at_most_once_a_minute(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "results.db"
    store = SQLiteStore(path, TTL, clock=clock)
    await store.put([result("old", created_at=T0 - TTL + 5)])  # purges (first put): nothing expired yet
    clock.now = T0 + 10  # "old" has expired
    await store.put([result("new", created_at=T0 + 10)])  # within the minute: no purge
    assert _stored_ids(path) == ["new", "old"]
    assert ids(await store.query(Query())) == ["new"]
    clock.now = T0 + 60
    await store.put([])  # a put, even of nothing, purges once the minute has passed
    assert _stored_ids(path) == ["new"]
    await store.close()


def _stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as connection:
        return [row[0] for row in connection.execute("SELECT request_id FROM results ORDER BY request_id")]


async def test_redis_index_is_trimmed_of_expired_members(
    redis_store: RedisStore, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    await redis_store.put([result(f"old{i}", created_at=T0 + i) for i in range(5)])
    assert await redis_client.zcard(redis_store.index_key) == 5
    clock.now = T0 + TTL + 3  # old0..old2 expired
    await redis_store.put([result("new", created_at=clock.now)])
    members = await redis_client.zrange(redis_store.index_key, 0, -1)
    assert members == [b"old3|refusal|refusal-rules/1", b"old4|refusal|refusal-rules/1", b"new|refusal|refusal-rules/1"]


async def test_redis_layout_and_expiry(redis_store: RedisStore, redis_client: aioredis.Redis) -> None:
    stored = result("r1", evidence=["x"])
    await redis_store.put([stored])
    key = "test:results:req:r1"
    assert await redis_client.hgetall(key) == {b"refusal|refusal-rules/1": stored.model_dump_json().encode()}
    assert 0 < await redis_client.pttl(key) <= TTL * 1000
    assert 0 < await redis_client.pttl("test:results:index") <= TTL * 1000
    assert await redis_client.zscore("test:results:index", "r1|refusal|refusal-rules/1") == T0


async def test_redis_query_skips_vanished_results_and_drops_their_members(
    redis_store: RedisStore, redis_client: aioredis.Redis
) -> None:
    await redis_store.put([result(f"r{i}", created_at=T0 - i) for i in (1, 2, 3)])
    await redis_client.delete("test:results:req:r2")  # as when its hash expired
    assert ids(await redis_store.query(Query())) == ["r1", "r3"]
    assert await redis_client.zcard(redis_store.index_key) == 2  # r2's member is gone
    assert await redis_client.zscore(redis_store.index_key, "r2|refusal|refusal-rules/1") is None


async def test_redis_store_works_with_decoded_responses(redis_server: Any, clock: FakeClock) -> None:
    store = RedisStore(aioredis.from_url(redis_server.url, decode_responses=True), TTL, clock=clock)
    await store.put(DATASET)
    assert await store.query(Query(model="gpt-b")) == [DATASET[1], DATASET[4]]
    assert await store.get("a") == [DATASET[0]]
    await store.close()


# --- persistence and opening


async def test_sqlite_file_persists_across_reopen(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "nested" / "results.db"
    store = SQLiteStore(path, TTL, clock=clock)
    await store.put(DATASET)
    await store.close()
    await store.close()  # closing twice is harmless
    with pytest.raises(RuntimeError, match="closed"):
        await store.get("a")
    reopened = SQLiteStore(path, TTL, clock=clock)
    assert await reopened.query(Query()) == DATASET
    assert await reopened.get("c") == [DATASET[2]]
    await reopened.close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_open_store_defaults_to_sqlite(tmp_path: Path) -> None:
    store = open_store(None, TTL, tmp_path / "results.db")
    assert isinstance(store, SQLiteStore)
    fresh = result("r1", created_at=time.time())
    await store.put([fresh])
    assert await store.get("r1") == [fresh]
    await store.close()


async def test_open_store_with_a_redis_url(redis_server: Any, tmp_path: Path) -> None:
    store = open_store(redis_server.url, TTL, tmp_path / "unused.db")
    assert isinstance(store, RedisStore)
    fresh = result("r1", created_at=time.time())
    await store.put([fresh])
    assert await store.get("r1") == [fresh]
    await store.close()
    assert not (tmp_path / "unused.db").exists()


def test_open_store_refuses_other_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="postgres"):
        open_store("postgres://db/results", TTL, tmp_path / "results.db")


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_ttl_must_be_positive(tmp_path: Path, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        SQLiteStore(tmp_path / "results.db", ttl)
