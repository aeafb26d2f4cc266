"""Model calls the gateway makes on its own account: probes, live-traffic re-asks and judge models.

One client for all of them, on the same path as client traffic (upstreams.http, upstreams.forwarding: the
HTTP client, the one retry policy, fallbacks, provider translation) but never through the front door: they
are not sampled into the judges and not counted in the client-traffic metrics (their metrics live on a
registry of their own). Every call carries ``content-type: application/json`` and ``x-medic-probe: <kind>``,
so that the upstream's own logs can tell them apart; the gateway does not honour that header from clients:
anyone could send it to escape monitoring.

``ModelClient(config, kind)`` calls the public models of a gateway configuration through their routes;
``ModelClient.endpoint(...)`` calls one OpenAI-compatible endpoint (a judge model).
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from config import GatewayConfig, UpstreamConfig
from protocol.errors import GatewayError
from upstreams.forwarding import Target, forward
from upstreams.http import Call, HttpUpstream, Reply, Upstream
from upstreams.metrics import ForwardingMetrics
from upstreams.routing import Router

# Told of every call a ModelClient completes, answered or not, in the context that set it: how a command shows its
# progress (judges/progress.py) without the probes passing anything down.
CALL_DONE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("call_done", default=None)
PROBE_HEADER = b"x-medic-probe"
JSON_CONTENT = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion: the first choice's text (None when the call failed) and the serving model."""

    text: str | None
    model: str | None  # the response's "model": the version actually served
    status: int


class ModelClient:
    def __init__(self, config: GatewayConfig, kind: str) -> None:
        router = Router(config, forward_client_auth=False)
        self._setup(list(router.upstreams.values()), router.targets, kind)

    @classmethod
    def endpoint(cls, name: str, config: UpstreamConfig, kind: str) -> ModelClient:
        """A client of the one OpenAI-compatible endpoint ``config`` describes, whatever model is asked."""
        client = cls.__new__(cls)
        upstream = HttpUpstream(name, config, forward_client_auth=False)
        client._setup([upstream], lambda model: [Target(upstream, model)], kind)
        client.endpoint_upstream = upstream
        return client

    def _setup(self, upstreams: list[Upstream], targets: Callable[[str], list[Target]], kind: str) -> None:
        self.upstreams = upstreams
        self.targets = targets
        self.metrics = ForwardingMetrics(CollectorRegistry())  # private: these calls are not client traffic
        self.headers = [JSON_CONTENT, (PROBE_HEADER, kind.encode())]
        self.kind = kind
        self.endpoint_upstream: HttpUpstream | None = None
        self._started = False

    async def start(self) -> None:
        for upstream in self.upstreams:
            await upstream.start()
        self._started = True

    async def __aenter__(self) -> ModelClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._started:
            for upstream in self.upstreams:
                await upstream.close()
        self._started = False

    async def post(self, path: str, payload: dict[str, Any]) -> Reply:
        """One non-streamed call of ``payload["model"]`` at ``path`` (under /v1); the client starts on first use.
        Raises GatewayError when every try of every route failed without an answer."""
        if not self._started:
            await self.start()
        # a UUID's 32 hex digits: llama-cpp-python answers a bare 400 to any other x-request-id (the kind of call
        # is in x-medic-probe)
        call = Call(path, orjson.dumps(payload), payload, False, uuid.uuid4().hex, self.headers, None)
        model = str(payload["model"])
        try:
            return (await forward(call, self.targets(model), self.metrics, model)).reply
        finally:
            done = CALL_DONE.get()
            if done is not None:
                done()

    async def get(self, path: str) -> Reply:
        """``GET path`` (under /v1) of a single endpoint's client, e.g. ``/models``; no retries."""
        assert self.endpoint_upstream is not None, "get() is for ModelClient.endpoint(...) clients"
        if not self._started:
            await self.start()
        return await self.endpoint_upstream.get(path)

    async def chat(self, model: str, messages: list[dict[str, Any]], **params: Any) -> Completion:
        """One non-streamed chat completion of ``model`` (a public model name of the configuration)."""
        try:
            reply = await self.post("/chat/completions", {**params, "model": model, "messages": messages,
                                                          "stream": False})  # fmt: skip
        except GatewayError as error:
            return Completion(None, None, error.status)
        if reply.status != 200:
            return Completion(None, None, reply.status)
        try:
            body = orjson.loads(reply.body)
            return Completion(str(body["choices"][0]["message"]["content"] or ""), body.get("model"), 200)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return Completion(None, None, 502)
