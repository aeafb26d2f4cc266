"""Shared fixtures for end-to-end tests: real HTTP on loopback from the OpenAI SDK to a fake upstream.

client (openai SDK) -> gateway (``gateway.app.Gateway`` on a real uvicorn server) -> FakeUpstream (aiohttp)
Each fixture is a factory; everything it started is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import openai
import pytest

from config import GatewayConfig, single_upstream
from gateway.tracing import Tracing
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream


@pytest.fixture(autouse=True)
def _no_ambient_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracing and content capture only where a test turns them on, whatever the environment says."""
    for name in (
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_upstream() -> Iterator[Callable[[], FakeUpstream]]:
    """``fake_upstream()`` starts a new scriptable upstream; its ``url`` ends in /v1."""
    started: list[FakeUpstream] = []

    def start() -> FakeUpstream:
        fake = FakeUpstream().start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def gateway() -> Iterator[Callable[..., GatewayServer]]:
    """``gateway(config, tracing=None)`` serves ``Gateway(config)`` with uvicorn on a free loopback port."""
    started: list[GatewayServer] = []

    def start(config: GatewayConfig, tracing: Tracing | None = None, redis_url: str | None = None,
              events: Any = None) -> GatewayServer:  # fmt: skip
        server = GatewayServer(config, tracing, redis_url, events).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def openai_client() -> Iterator[Callable[..., openai.OpenAI]]:
    """``openai_client(gateway, **options)``: a synchronous SDK client on the gateway, no SDK retries."""
    clients: list[openai.OpenAI] = []

    def make(server: GatewayServer, **options: Any) -> openai.OpenAI:
        options = {"api_key": "sk-client", "max_retries": 0, "timeout": 10.0, **options}
        client = openai.OpenAI(base_url=server.base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
async def async_openai_client() -> AsyncIterator[Callable[..., openai.AsyncOpenAI]]:
    """``async_openai_client(gateway, **options)``: the asynchronous SDK client, no SDK retries."""
    clients: list[openai.AsyncOpenAI] = []

    def make(server: GatewayServer, **options: Any) -> openai.AsyncOpenAI:
        options = {"api_key": "sk-client", "max_retries": 0, "timeout": 10.0, **options}
        client = openai.AsyncOpenAI(base_url=server.base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def redis_server(tmp_path: Any) -> Iterator[Any]:
    """A real redis-server on a free loopback port; ``redis_server.url``, ``.stop()``, ``.start()``."""
    from tests.fakes.redis_server import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def fake(fake_upstream: Callable[[], FakeUpstream]) -> FakeUpstream:
    """One fake upstream for the test."""
    return fake_upstream()


@pytest.fixture
def gw(fake: FakeUpstream, gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """The gateway with no configuration file, forwarding every model to ``fake``."""
    return gateway(single_upstream(fake.url))
