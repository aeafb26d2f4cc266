"""Retries, fallback and isolation between upstreams, end to end over loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from config import GatewayConfig, ModelConfig, Route, UpstreamConfig
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import (
    Abort,
    FakeUpstream,
    Gate,
    Json,
    Spec,
    Stream,
    chat_chunks,
    chat_completion,
    closed_port,
    error,
)

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]
AsyncClient = Callable[..., openai.AsyncOpenAI]

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Is this ECG normal?"}]
RETRIES = "medic_gateway_upstream_retries_total"
FALLBACKS = "medic_gateway_fallbacks_total"


def upstream(url: str, **options: Any) -> UpstreamConfig:
    """An upstream with short backoff, so that retries cost milliseconds here."""
    return UpstreamConfig(**{"url": url, "backoff_ms": 5, "backoff_max_ms": 20, **options})


def config(upstreams: dict[str, UpstreamConfig]) -> GatewayConfig:
    """Model "clinical" routed through every upstream, in order."""
    return GatewayConfig(
        upstreams=upstreams, models={"clinical": ModelConfig(routes=[Route(upstream=n) for n in upstreams])}
    )


def _chat(model: str = "clinical", **fields: Any) -> bytes:
    return json.dumps({"model": model, "messages": MESSAGES, **fields}).encode()


# ------------------------------------------------------------------------------------------ retries


def test_503_twice_then_200_is_retried_and_succeeds(
    fake_upstream: Fake, gateway: Gateway, openai_client: Client
) -> None:
    fake = fake_upstream()
    fake.script(CHAT, error(503, type_="server_error"), error(503, type_="server_error"), Json(chat_completion("ok")))
    gw = gateway(config({"a": upstream(fake.url, retries=2)}))
    completion = openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert completion.choices[0].message.content == "ok"
    assert len(fake.requests) == 3
    assert all(r.body == fake.requests[0].body for r in fake.requests)  # each retry sends the same bytes
    gw.metrics_when(lambda t: http.metric(t, RETRIES, upstream="a", reason="server_error") == 2)


def test_without_retries_the_503_is_passed_on(fake_upstream: Fake, gateway: Gateway, openai_client: Client) -> None:
    fake = fake_upstream()
    unavailable = error(503, "overloaded", type_="server_error", code="overloaded")
    fake.script(CHAT, unavailable, Json(chat_completion("too late")))
    gw = gateway(config({"a": upstream(fake.url, retries=0)}))
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert (response.status, response.body) == (503, unavailable.body_bytes())
    with pytest.raises(openai.InternalServerError) as caught:
        fake.script(CHAT, unavailable)
        openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert caught.value.status_code == 503 and caught.value.code == "overloaded"
    assert len(fake.requests) == 2
    assert http.metric(gw.metrics(), RETRIES) == 0


def test_429_is_retried(fake_upstream: Fake, gateway: Gateway, openai_client: Client) -> None:
    fake = fake_upstream()
    fake.script(CHAT, error(429, "slow down", type_="rate_limit_error"), Json(chat_completion("ok")))
    gw = gateway(config({"a": upstream(fake.url, retries=1)}))
    completion = openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert completion.choices[0].message.content == "ok"
    assert len(fake.requests) == 2
    gw.metrics_when(lambda t: http.metric(t, RETRIES, upstream="a", reason="rate_limited") == 1)


def test_retry_after_is_honoured(fake_upstream: Fake, gateway: Gateway) -> None:
    fake = fake_upstream()
    fake.script(CHAT, error(429, headers={"Retry-After": "1"}), Json(chat_completion()))
    gw = gateway(config({"a": upstream(fake.url, retries=1, backoff_max_ms=5000)}))
    assert http.request(gw.url, "POST", CHAT, _chat()).status == 200
    first, second = fake.requests
    assert second.received_at - first.received_at >= 0.9


def test_retry_after_is_capped_by_backoff_max(fake_upstream: Fake, gateway: Gateway) -> None:
    fake = fake_upstream()
    fake.script(CHAT, error(429, headers={"Retry-After": "30"}), Json(chat_completion()))
    gw = gateway(config({"a": upstream(fake.url, retries=1, backoff_max_ms=100)}))
    started = time.monotonic()
    assert http.request(gw.url, "POST", CHAT, _chat()).status == 200
    assert time.monotonic() - started < 3


def test_client_errors_are_neither_retried_nor_fallen_back(fake_upstream: Fake, gateway: Gateway) -> None:
    a, b = fake_upstream(), fake_upstream()
    a.script(CHAT, error(400, "bad request", code="bad"))
    gw = gateway(config({"a": upstream(a.url, retries=2), "b": upstream(b.url)}))
    assert http.request(gw.url, "POST", CHAT, _chat()).status == 400
    assert (len(a.requests), len(b.requests)) == (1, 0)


# ----------------------------------------------------------------------------------------- fallback


def test_connection_refused_is_retried_then_falls_back(
    fake_upstream: Fake, gateway: Gateway, openai_client: Client
) -> None:
    b = fake_upstream()
    b.script(CHAT, Json(chat_completion("from b")))
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(config({"a": upstream(dead, retries=1), "b": upstream(b.url)}))
    completion = openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert completion.choices[0].message.content == "from b"
    assert len(b.requests) == 1
    text = gw.metrics_when(lambda t: http.metric(t, FALLBACKS) == 1)
    assert http.metric(text, RETRIES, upstream="a", reason="connection_error") == 1
    assert http.metric(text, FALLBACKS, model="clinical", upstream="a") == 1
    assert http.metric(text, "medic_gateway_requests_total", upstream="b", status_code="200") == 1


def test_fallback_route_gets_its_own_model_name(fake_upstream: Fake, gateway: Gateway) -> None:
    a, b = fake_upstream(), fake_upstream()
    a.script(CHAT, error(503))
    routes = [Route(upstream="a", model="big-model"), Route(upstream="b", model="small-model")]
    cfg = GatewayConfig(
        upstreams={"a": upstream(a.url, retries=0), "b": upstream(b.url)},
        models={"clinical": ModelConfig(routes=routes)},
    )
    gw = gateway(cfg)
    assert http.request(gw.url, "POST", CHAT, _chat(x_extra=1)).status == 200
    assert a.last.json["model"] == "big-model"
    assert b.last.json == {**a.last.json, "model": "small-model"}


def test_timeout_falls_back_without_retrying_the_slow_upstream(fake_upstream: Fake, gateway: Gateway) -> None:
    a, b = fake_upstream(), fake_upstream()
    a.script(CHAT, Json(chat_completion("late"), delay_s=5))
    b.script(CHAT, Json(chat_completion("from b")))
    gw = gateway(config({"a": upstream(a.url, retries=2, timeout_s=0.3), "b": upstream(b.url)}))
    started = time.monotonic()
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert response.status == 200
    assert response.json()["choices"][0]["message"]["content"] == "from b"
    assert time.monotonic() - started < 3
    assert (len(a.requests), len(b.requests)) == (1, 1)


@pytest.mark.parametrize(
    "failure",
    [error(503, type_="server_error"), Abort(), Stream([Abort()])],
    ids=["503", "connection-dropped", "headers-then-nothing"],
)
def test_stream_falls_back_before_its_first_byte(
    failure: Spec, fake_upstream: Fake, gateway: Gateway, openai_client: Client
) -> None:
    a, b = fake_upstream(), fake_upstream()
    a.script(CHAT, failure)
    stream = Stream(chat_chunks(["from", " b"]))
    b.script(CHAT, stream)
    gw = gateway(config({"a": upstream(a.url, retries=0), "b": upstream(b.url)}))
    response = http.request(gw.url, "POST", CHAT, _chat(stream=True))
    assert response.status == 200
    assert response.body == stream.wire(include_usage=False)
    assert (len(a.requests), len(b.requests)) == (1, 1)
    chunks = openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "from b"
    gw.metrics_when(lambda t: http.metric(t, FALLBACKS, model="clinical", upstream="a") == 2)


def test_a_stream_that_broke_after_its_first_byte_is_not_retried(fake_upstream: Fake, gateway: Gateway) -> None:
    a, b = fake_upstream(), fake_upstream()
    role, first, *_ = chat_chunks(["partial"])
    a.script(CHAT, Stream([role, first, Abort()]))
    gw = gateway(config({"a": upstream(a.url, retries=2), "b": upstream(b.url)}))
    response = http.request(gw.url, "POST", CHAT, _chat(stream=True))
    assert response.status == 200
    *chunks, last = http.chunks_of(response.body)
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "partial"]
    assert last["error"]["code"] == "upstream_stream_broken"  # the client's SDK raises: no truncated answer
    assert (len(a.requests), len(b.requests)) == (1, 0)  # the client has seen bytes: no second answer


def test_500_on_the_last_route_is_passed_on_after_retries(
    fake_upstream: Fake, gateway: Gateway, openai_client: Client
) -> None:
    a, b = fake_upstream(), fake_upstream()
    a.script(CHAT, error(500, "a broke", type_="server_error"))
    last = error(500, "b broke too", type_="server_error", code="b_down")
    b.script(CHAT, last)
    gw = gateway(config({"a": upstream(a.url, retries=1), "b": upstream(b.url, retries=2)}))
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert (response.status, response.body) == (500, last.body_bytes())
    assert (len(a.requests), len(b.requests)) == (2, 3)
    text = gw.metrics_when(lambda t: http.metric(t, "medic_gateway_requests_total", status_code="500") == 1)
    assert http.metric(text, RETRIES, upstream="a", reason="server_error") == 1
    assert http.metric(text, RETRIES, upstream="b", reason="server_error") == 2
    assert http.metric(text, FALLBACKS, model="clinical", upstream="a") == 1
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert caught.value.code == "b_down"


# ---------------------------------------------------------------------------------------- isolation


def two_models(slow_url: str, fast_url: str, **slow_options: Any) -> GatewayConfig:
    """Model "slow" on upstream a, model "fast" on upstream b."""
    return GatewayConfig(
        upstreams={"a": upstream(slow_url, retries=0, **slow_options), "b": upstream(fast_url)},
        models={"slow": ModelConfig(routes=[Route(upstream="a")]), "fast": ModelConfig(routes=[Route(upstream="b")])},
    )


async def _until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def test_a_slow_upstream_does_not_delay_another(
    fake_upstream: Fake, gateway: Gateway, async_openai_client: AsyncClient
) -> None:
    slow, fast = fake_upstream(), fake_upstream()
    slow.script(CHAT, Json(chat_completion("slow"), delay_s=3))
    fast.script(CHAT, Json(chat_completion("fast")))
    gw = gateway(two_models(slow.url, fast.url))
    client = async_openai_client(gw)
    pending = [
        asyncio.ensure_future(client.chat.completions.create(model="slow", messages=MESSAGES)) for _ in range(20)
    ]
    await _until(lambda: len(slow.requests) == 20)
    started = time.monotonic()
    answer = await client.chat.completions.create(model="fast", messages=MESSAGES)
    took = time.monotonic() - started
    assert answer.choices[0].message.content == "fast"
    assert not any(task.done() for task in pending), "the slow requests finished first: nothing was shown"
    assert took < 1.5, f"a request to the fast upstream took {took:.2f} s while the slow one was busy"
    done = await asyncio.gather(*pending)
    assert {c.choices[0].message.content for c in done} == {"slow"}


async def test_a_saturated_connection_pool_does_not_block_another_upstream(
    fake_upstream: Fake, gateway: Gateway, async_openai_client: AsyncClient
) -> None:
    slow, fast = fake_upstream(), fake_upstream()
    release = threading.Event()
    slow.script(CHAT, Stream([Gate(release, timeout_s=10), *chat_chunks(["slow"])]))
    gw = gateway(two_models(slow.url, fast.url, max_connections=2))
    client = async_openai_client(gw)

    async def slow_text() -> str:
        stream = await client.chat.completions.create(model="slow", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    pending = [asyncio.ensure_future(slow_text()) for _ in range(6)]
    try:
        await _until(lambda: len(slow.requests) == 2)  # the pool of "a" is full; 4 requests wait for it
        await asyncio.sleep(0.2)
        assert len(slow.requests) == 2
        answer = await asyncio.wait_for(client.chat.completions.create(model="fast", messages=MESSAGES), 5)
        assert answer.choices[0].message.content
        assert not any(task.done() for task in pending)
    finally:
        release.set()
    assert await asyncio.gather(*pending) == ["slow"] * 6


def test_readiness_names_an_upstream_that_is_down_and_stays_ready(fake_upstream: Fake, gateway: Gateway) -> None:
    b = fake_upstream()
    b.script("/v1/models", Json({"object": "list", "data": []}))
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    gw = gateway(config({"a": upstream(dead), "b": upstream(b.url)}))
    response = http.request(gw.url, "GET", "/readyz")
    assert response.status == 200  # one upstream's outage is not the gateway's: it still serves model b
    assert json.loads(response.body) == {"status": "degraded", "upstreams": {"a": "down", "b": "up"}}


def test_readiness_is_ready_when_every_upstream_answers(fake_upstream: Fake, gateway: Gateway) -> None:
    a = fake_upstream()
    a.script("/v1/models", Json({"error": {"message": "no key"}}, status=401))  # reachable: up
    gw = gateway(config({"a": upstream(a.url)}))
    assert json.loads(http.request(gw.url, "GET", "/readyz").body) == {"status": "ready", "upstreams": {"a": "up"}}
