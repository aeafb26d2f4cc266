"""Chat completions the gateway makes on its own account: probes and live-traffic re-asks.

They take the same upstream path as user traffic (the configuration's routes, retries, fallbacks and provider
translation) but never its front door: they are not sampled into the judges, not counted in the user-traffic
metrics (their metrics live on a registry of their own), and every upstream request carries
``x-medic-probe: <kind>`` so that the upstream's own logs can tell them apart. The gateway does not honour
that header from clients: anyone could send it to escape monitoring.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from config import GatewayConfig
from protocol.errors import GatewayError
from upstreams.forwarding import forward
from upstreams.http import Call
from upstreams.metrics import ForwardingMetrics
from upstreams.routing import Router

PROBE_HEADER = b"x-medic-probe"


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion: the first choice's text (None when the call failed) and the serving model."""

    text: str | None
    model: str | None  # the response's "model": the version actually served
    status: int


class ModelClient:
    def __init__(self, config: GatewayConfig, kind: str) -> None:
        self.router = Router(config, forward_client_auth=False)
        self.metrics = ForwardingMetrics(CollectorRegistry())  # private: probes are not user traffic
        self.headers = [(PROBE_HEADER, kind.encode())]

    async def start(self) -> None:
        for upstream in self.router.upstreams.values():
            await upstream.start()

    async def close(self) -> None:
        for upstream in self.router.upstreams.values():
            await upstream.close()

    async def chat(self, model: str, messages: list[dict[str, Any]], **params: Any) -> Completion:
        """One non-streamed chat completion of ``model`` (a public model name of the configuration)."""
        payload = {**params, "model": model, "messages": messages, "stream": False}
        call = Call("/chat/completions", orjson.dumps(payload), payload, False, f"probe-{secrets.token_hex(8)}",
                    self.headers, None)  # fmt: skip
        try:
            outcome = await forward(call, self.router.targets(model), self.metrics, model)
        except GatewayError as error:
            return Completion(None, None, error.status)
        reply = outcome.reply
        if reply.status != 200:
            return Completion(None, None, reply.status)
        try:
            body = orjson.loads(reply.body)
            return Completion(str(body["choices"][0]["message"]["content"] or ""), body.get("model"), 200)
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            return Completion(None, None, 502)
