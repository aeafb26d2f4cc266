"""The sampling decision and the shipper, without HTTP: rates, triggers, budget, buffer, a failing queue."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from config import SampleRate, SamplingConfig
from gateway.encoder import encode_batch
from gateway.metrics import Metrics
from gateway.sampler import Sampler, build_sample
from pipeline.queue import MemoryQueue, QueueUnavailable
from pipeline.sample import Sample
from protocol.exchange import Exchange


def exchange(request_id: str, model: str = "m", tenant: str = "default", upstream: str = "u") -> Exchange:
    ex = Exchange(request_id, "chat", tenant)
    ex.model, ex.upstream, ex.status = model, upstream, 200
    ex.payload = {"model": model, "messages": [{"role": "user", "content": "Dr. Jane Roe asks about warfarin 5 mg"}]}
    ex.output, ex.finish_reasons = ["Warfarin 5 mg daily; Jane Roe should check INR."], ["stop"]
    return ex


def counted(metrics: Metrics, family_name: str, label: str) -> dict[str, float]:
    """A counter family's values by one label, read from the registry."""
    return {
        sample.labels[label]: sample.value
        for family in metrics.registry.collect()
        if family.name == family_name
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def decisions(metrics: Metrics) -> dict[str, float]:
    return counted(metrics, "medic_gateway_sampling_decisions", "decision")


def sampler(queue: object | None = None, **config: object) -> tuple[Sampler, Metrics]:
    metrics = Metrics()
    settings = SamplingConfig(**{"max_samples_per_s": 1e9, **config})  # type: ignore[arg-type]
    return Sampler(settings, queue or MemoryQueue(100_000), metrics), metrics  # type: ignore[arg-type]


def test_rate_is_deterministic_on_the_request_id_and_close_to_the_configured_share() -> None:
    first, _ = sampler(rate=0.25)
    second, _ = sampler(rate=0.25)
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [i for i in ids if first._trigger(exchange(i), []) == "rate"]
    assert picked == [i for i in ids if second._trigger(exchange(i), []) == "rate"]  # replicas agree
    assert 0.23 < len(picked) / len(ids) < 0.27


def test_the_most_specific_rate_wins() -> None:
    rates = [SampleRate(tenant="oncology", rate=1.0), SampleRate(model="m", tenant="oncology", rate=0.0),
             SampleRate(model="cheap", rate=0.0)]  # fmt: skip
    s, _ = sampler(rate=0.5, rates=rates)
    assert s.rate("m", "u", "oncology") == 0.0
    assert s.rate("other", "u", "oncology") == 1.0
    assert s.rate("cheap", "u", "cardiology") == 0.0
    assert s.rate("other", "u", "cardiology") == 0.5


def test_header_and_policy_always_sample_and_errors_never_do() -> None:
    s, _ = sampler(rate=0.0, debug_header="x-medic-sample")
    assert s._trigger(exchange("a"), [(b"x-medic-sample", b"1")]) == "header"
    assert s._trigger(exchange("b"), [(b"x-medic-sample", b"0")]) is None
    flagged = exchange("c")
    flagged.policy_flagged = True
    assert s._trigger(flagged, []) == "policy"
    failed = exchange("d")
    failed.status = 502
    assert s._trigger(failed, [(b"x-medic-sample", b"1")]) == "not_applicable"


async def test_budget_sheds_load_before_the_queue() -> None:
    queue = MemoryQueue(1000)
    s, metrics = sampler(queue, rate=1.0, max_samples_per_s=5)
    s.start()
    for i in range(50):
        s.consider(exchange(f"r{i}"), [])
    await s.stop()
    counted = decisions(metrics)
    assert counted["rate"] == 5 and counted["over_budget"] == 45
    assert (await queue.depth()).length == 5  # shed samples never reach the queue


async def test_samples_are_pseudonymised_before_they_are_queued() -> None:
    queue = MemoryQueue(10)
    s, _ = sampler(queue, rate=1.0)
    s.start()
    s.consider(exchange("r1"), [])
    await s.stop()
    (delivery,) = await queue.read("c", 10, 100)
    sample = Sample.model_validate_json(delivery.payload)
    assert sample.privacy == "pseudonymised" and "Jane" not in delivery.payload.decode()
    assert "warfarin 5 mg" in sample.messages()[0]["content"]


class DownQueue(MemoryQueue):
    def __init__(self) -> None:
        super().__init__(1000)
        self.down = True

    async def put(self, payloads: list[bytes]) -> int:
        if self.down:
            raise QueueUnavailable("ConnectionError")
        return await super().put(payloads)


async def test_a_queue_that_is_down_costs_no_sample_the_buffer_has_room_for() -> None:
    queue = DownQueue()
    s, metrics = sampler(queue, rate=1.0, buffer_size=10)
    s.start()
    for i in range(30):
        s.consider(exchange(f"r{i}"), [])  # returns at once, whatever the queue does
    for _ in range(100):
        if queue_errors(metrics):
            break
        await asyncio.sleep(0.05)
    assert queue_errors(metrics) >= 1 and s.buffered == 10  # held, not thrown away
    queue.down = False
    s.consider(exchange("after"), [])  # the buffer is full: the newest is the one dropped (when_full default)
    for _ in range(100):
        if not s.buffered:
            break
        await asyncio.sleep(0.05)
    assert await s.stop(timeout_s=6) == 0
    assert dropped(metrics) == {"buffer_full": 21}
    ids = [Sample.model_validate_json(d.payload).request_id for d in await queue.read("c", 100, 100)]
    assert ids == [f"r{i}" for i in range(10)]  # every sample the buffer had room for, in order


async def test_a_full_buffer_may_give_up_its_oldest_instead() -> None:
    queue = DownQueue()
    s, metrics = sampler(queue, rate=1.0, buffer_size=5, when_full="drop_oldest")
    s.start()
    for i in range(12):
        s.consider(exchange(f"r{i}"), [])
        await asyncio.sleep(0)
    queue.down = False
    s._backoff_until = 0.0  # the test does not wait out the backoff
    for _ in range(200):
        if not s.buffered:
            break
        await asyncio.sleep(0.05)
    await s.stop(timeout_s=6)
    ids = [Sample.model_validate_json(d.payload).request_id for d in await queue.read("c", 100, 100)]
    assert ids == [f"r{i}" for i in range(7, 12)] and dropped(metrics) == {"buffer_full": 7}


async def test_stopping_ships_what_it_can_and_counts_the_rest() -> None:
    queue = DownQueue()
    s, metrics = sampler(queue, rate=1.0)
    s.start()
    for i in range(4):
        s.consider(exchange(f"r{i}"), [])
    assert await s.stop(timeout_s=0.3) == 4
    assert dropped(metrics) == {"shutdown": 4}
    queue.down = False
    back, metrics = sampler(queue, rate=1.0)
    back.start()
    back.consider(exchange("late"), [])
    assert await back.stop(timeout_s=5) == 0  # a stop ships at once, without waiting for the linger or a backoff
    ids = [Sample.model_validate_json(d.payload).request_id for d in await queue.read("c", 100, 100)]
    assert ids == ["late"]


async def test_samples_a_full_queue_gave_up_are_counted_as_overload() -> None:
    class Full(MemoryQueue):
        async def put(self, payloads: list[bytes]) -> int:
            await super().put(payloads)
            return 2  # as the Redis stream reports the unread samples its cap trimmed

    s, metrics = sampler(Full(100), rate=1.0)
    s.start()
    s.consider(exchange("r1"), [])
    await s.stop(timeout_s=5)
    assert dropped(metrics) == {"overload": 2}


def queue_errors(metrics: Metrics) -> float:
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "medic_gateway_sample_queue_errors"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def dropped(metrics: Metrics) -> dict[str, float]:
    return counted(metrics, "medic_gateway_samples_dropped", "reason")


def test_encrypted_samples_hold_no_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.fernet import Fernet

    from pipeline import privacy

    key = Fernet.generate_key()
    monkeypatch.setenv("TEST_SAMPLE_KEY", key.decode())
    (payload,) = encode_batch([build_sample(exchange("r1"), "rate")], "encrypted", key)
    assert payload is not None and b"warfarin" not in payload and b"Jane" not in payload
    restored = privacy.decrypt(orjson.loads(payload), key)
    assert restored["request"] == build_sample(exchange("r1"), "rate")["request"]


async def test_an_encoder_process_that_dies_costs_one_batch_and_is_replaced() -> None:
    import os
    import signal

    queue = MemoryQueue(100)
    s, _ = sampler(queue, rate=1.0, encoder="process")
    s.start()
    s.consider(exchange("before"), [])
    for _ in range(100):
        if (await queue.depth()).length:
            break
        await asyncio.sleep(0.05)
    assert s._pool is not None
    for pid in list(s._pool._processes):  # the encoder process, killed outright
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.2)
    s.consider(exchange("lost"), [])
    await asyncio.sleep(0.5)
    s.consider(exchange("after"), [])
    await s.stop(timeout_s=10)
    ids = [Sample.model_validate_json(d.payload).request_id for d in await queue.read("c", 100, 100)]
    assert "before" in ids and "after" in ids
