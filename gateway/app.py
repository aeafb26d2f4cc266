"""The gateway as a raw ASGI application: dispatch, request id, auth, errors rendered in one place.

No web framework sits on the hot path: architecture.md measured one at 0.1 to 0.6 ms per request,
more than the whole budget of the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import traceback
from typing import Any

import orjson

from config import GatewayConfig
from gateway import openapi, telemetry
from gateway.asgi import ClientGone, Receive, Request, Scope, Send, send_error, send_json
from gateway.auth import KeyRing
from gateway.evaluations import EVALUATIONS, Evaluations
from gateway.metrics import Metrics
from gateway.page import EVIDENCE, EvidencePage
from gateway.pipeline import Pipeline
from gateway.proxy import OPERATIONS, Proxy
from gateway.tracing import Tracing, configure
from judges.events import EvaluationEvents
from policies.monitor import ResultsMonitor
from policies.setup import build_engine
from protocol.errors import GatewayError, MethodNotAllowed, NotFound
from protocol.exchange import Exchange
from protocol.requests import warm_validators
from upstreams.routing import Router

log = logging.getLogger("medic_gateway")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
CONTROL_PATHS = frozenset({"/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"})
UPSTREAM_CHECK_S = 5.0  # /readyz asks the upstreams at most this often
UPSTREAM_CHECK_TIMEOUT_S = 2.0
PROMETHEUS = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")


class Gateway:
    """``Gateway(config)`` is the ASGI application uvicorn serves."""

    def __init__(
        self, config: GatewayConfig, tracing: Tracing | None = None, redis_url: str | None = None,
        events: EvaluationEvents | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.keys = KeyRing(config.keys)
        self.metrics = Metrics(config.telemetry.max_model_labels)
        self.router = Router(config, forward_client_auth=self.keys.open)
        self.metrics.allow_models(self.router.named_models())
        self.tracing = tracing or configure(config.telemetry.capture_content)
        self.policies = build_engine(config.policies, self.metrics.registry)
        self.proxy = Proxy(self.router, self.metrics, self.tracing, self.policies, config.server.validate_requests)
        self.pipeline = Pipeline(config, self.metrics, redis_url, events)
        self.evaluations = Evaluations(self.pipeline.store, config, self.keys.open)
        self.evidence = EvidencePage(self.pipeline.store, config, self.keys.open, self.metrics.registry)
        self.monitor = None
        if self.policies is not None:
            models, every_s = self.router.named_models(), config.policies.monitor_every_s
            self.monitor = ResultsMonitor(self.policies, self.pipeline.store, models, every_s)
        self._stop = asyncio.Event()
        self._monitor_task: asyncio.Task[None] | None = None
        self.ready = False
        self._limit = config.server.max_request_body_bytes
        self._upstreams_checked = float("-inf")
        self._upstream_states: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(Request.from_scope(scope, receive), send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def startup(self) -> None:
        if self.config.server.validate_requests:
            warm_validators()  # compiled once, before the first request waits for it
        for upstream in self.router.upstreams.values():
            await upstream.start()
        await self.pipeline.start()
        if self.monitor is not None and self.monitor.rules:
            self._monitor_task = asyncio.get_running_loop().create_task(self.monitor.run(self._stop), name="policies")
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        self._stop.set()
        if self._monitor_task is not None:
            await self._monitor_task
        await self.pipeline.stop()
        for upstream in self.router.upstreams.values():
            await upstream.close()
        self.tracing.shutdown()
        if self.policies is not None:
            self.policies.audit.close()

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as error:  # e.g. a provider whose extra is not installed
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def http(self, request: Request, send: Send) -> None:
        request_id = _request_id(request)
        operation = OPERATIONS.get(request.path)
        if operation is not None and request.method == "POST":
            await self.model_request(request, send, operation, request_id)
            return
        try:
            await self.control(request, send, request_id)
        except GatewayError as error:
            await send_error(send, error, request_id)

    async def model_request(self, request: Request, send: Send, operation: str, request_id: str) -> None:
        ex = Exchange(request_id, operation, tenant="")
        self.metrics.in_flight.labels(request.path).inc()
        try:
            ex.tenant = self.keys.tenant(request.authorization)
            await request.read_body(self._limit)
            await self.proxy.handle(request, send, ex)
        except GatewayError as error:
            ex.status = error.status
            ex.error_type = ex.error_type or error.code
            await send_error(send, error, request_id)
        except ClientGone:
            ex.status, ex.disconnected = 499, True
        except Exception as error:
            await self._unexpected(error, send, ex)
        finally:
            self.metrics.in_flight.labels(request.path).dec()
            telemetry.observe(self.metrics, ex, request.path)
            self.pipeline.sampler.consider(ex, request.headers)

    async def _unexpected(self, error: Exception, send: Send, ex: Exchange) -> None:
        """A bug: log where it happened (never the message, which may quote the request) and answer 500."""
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("request %s failed with %s at\n%s", ex.request_id, type(error).__name__, frames)
        ex.error_type = type(error).__name__
        if ex.status == 0:  # nothing has been sent yet
            ex.status = 500
            await send_error(send, GatewayError("The gateway failed to handle the request."), ex.request_id)

    async def control(self, request: Request, send: Send, request_id: str) -> None:
        """Everything that is not a model request: models, health, readiness, metrics."""
        path = request.path
        readable = path in CONTROL_PATHS or path.startswith((EVALUATIONS, EVIDENCE))
        if path in OPERATIONS or (readable and request.method not in {"GET", "HEAD"}):
            allow = "POST" if path in OPERATIONS else "GET, HEAD"
            raise MethodNotAllowed(f"Method {request.method} is not allowed on {path}.", allow)
        if path == "/healthz":
            await send_json(send, 200, b'{"status":"ok"}', request_id)
        elif path == "/readyz":
            if not self.ready:
                await send_json(send, 503, b'{"status":"starting"}', request_id)
                return
            upstreams = await self.upstream_health()
            status = "ready" if all(state != "down" for state in upstreams.values()) else "degraded"
            await send_json(send, 200, orjson.dumps({"status": status, "upstreams": upstreams}), request_id)
        elif path == "/metrics":
            await self.send_metrics(send, request_id)
        elif path == "/openapi.json":
            await send_json(send, 200, openapi.document(), request_id)
        elif path.startswith(EVALUATIONS):
            await self.evaluations.handle(request, send, request_id)
        elif path == EVIDENCE or path.startswith(EVIDENCE + "/"):
            await self.evidence.handle(request, send, request_id)
        elif path == "/v1/models":
            self.keys.tenant(request.authorization)
            await send_json(send, 200, orjson.dumps(await self.models(request.authorization)), request_id)
        else:
            raise NotFound(f"Unknown path {path}.")

    async def upstream_health(self) -> dict[str, str]:
        """Each upstream "up" (it answered GET /models, whatever the status below 500), "down" (no connection, a
        timeout, a 5xx) or "unknown" (a translated provider), asked at most every UPSTREAM_CHECK_S seconds. A
        gateway stays ready while an upstream is down: taking every replica out of service would turn one
        upstream's outage into the gateway's; /readyz says "degraded" and names it."""
        now = asyncio.get_running_loop().time()
        if now - self._upstreams_checked < UPSTREAM_CHECK_S:
            return self._upstream_states
        self._upstreams_checked = now
        names = list(self.router.upstreams)
        states = await asyncio.gather(*(self._upstream_state(self.router.upstreams[n]) for n in names))
        self._upstream_states = dict(zip(names, states, strict=True))
        return self._upstream_states

    @staticmethod
    async def _upstream_state(upstream: Any) -> str:
        get = getattr(upstream, "get", None)
        if get is None:
            return "unknown"
        try:
            reply = await asyncio.wait_for(get("/models"), UPSTREAM_CHECK_TIMEOUT_S)
        except Exception:  # refused, reset, timed out: down, whatever the cause
            return "down"
        return "down" if reply.status >= 500 else "up"

    async def send_metrics(self, send: Send, request_id: str) -> None:
        body = self.metrics.exposition()
        headers = [PROMETHEUS, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def models(self, client_auth: str | None) -> dict[str, Any]:
        """Configured models; in pass-through mode, also what the wildcard upstream lists."""
        data: list[dict[str, Any]] = [{"id": name, "object": "model", "created": 0, "owned_by": "medic-gateway"}
                for name in self.router.named_models()]  # fmt: skip
        if self.router.wildcard:
            data += await self._wildcard_models({m["id"] for m in data}, client_auth)
        return {"object": "list", "data": data}

    async def _wildcard_models(self, known: set[str], client_auth: str | None) -> list[dict[str, Any]]:
        upstream = self.router.targets("*")[0].upstream
        get = getattr(upstream, "get", None)
        if get is None:
            return []
        try:
            reply = await get("/models", client_auth)
            listed = orjson.loads(reply.body).get("data", []) if reply.status == 200 else []
        except Exception:  # an upstream that cannot list its models still serves them
            log.warning("upstream %s did not list its models", upstream.name)
            return []
        return [m for m in listed if isinstance(m, dict) and m.get("id") not in known]


def _request_id(request: Request) -> str:
    given = request.header(b"x-request-id")
    if given and REQUEST_ID.match(given):
        return given
    return new_request_id()


class _RandomIds:
    """128-bit random request ids from the operating system's CSPRNG (what ``secrets`` reads), drawn 4 KiB at a
    time: one system call per 256 requests instead of one per request."""

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked process never repeats its parent's ids

    def _reset(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return self._pool[at : at + 16].hex()


new_request_id = _RandomIds()
