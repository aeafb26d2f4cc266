"""The three model endpoints: chat completions, completions and embeddings.

Parse just enough of the body to route it (model, stream), forward the client's bytes, and relay the
answer: a JSON body exactly as the upstream sent it, or an event stream event by event as it arrives.
Everything that is not needed to answer (metrics, usage, span attributes) happens after the last byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from functools import partial
from time import perf_counter
from typing import Any

import orjson
from opentelemetry import trace

from gateway import telemetry
from gateway.asgi import JSON, ClientGone, Receive, Request, Send, start_headers
from gateway.metrics import Metrics
from gateway.tracing import Tracing, outgoing_headers, parent_context, provider_name, traceparent
from policies.engine import PolicyBlocked, PolicyEngine, withheld
from policies.stream import StreamGuard
from protocol import requests
from protocol.errors import GatewayError, InvalidRequest, ModelNotFound, render_error
from protocol.exchange import Exchange
from protocol.sse import EventSplitter, StreamSummary, error_event
from protocol.tasks import RAW_TASK_HEADER, stated
from upstreams.forwarding import Outcome, Target, forward
from upstreams.http import Call, RawHeaders, Reply
from upstreams.routing import Router

WATCH_AFTER_S = 0.02
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/embeddings": "embeddings"}
SCHEMAS = {"chat": "chat", "text_completion": "completions", "embeddings": "embeddings"}  # protocol/requests.py

log = logging.getLogger("medic_gateway.policies")


class Proxy:
    def __init__(
        self, router: Router, metrics: Metrics, tracing: Tracing, policies: PolicyEngine | None = None,
        validate: bool = True,
    ) -> None:  # fmt: skip
        self.validate = validate
        self.router = router
        self.metrics = metrics
        self.tracing = tracing
        self.policies = policies

    async def handle(self, request: Request, send: Send, exchange: Exchange) -> None:
        """Answer one model request; GatewayError escapes before any byte is sent, never after."""
        payload = _parse(request.body)
        exchange.model = model = _model(payload)
        if self.validate:
            requests.check(SCHEMAS[exchange.operation], payload)
        exchange.stream = stream = payload.get("stream") is True and exchange.operation != "embeddings"
        exchange.payload = payload
        targets = self.router.targets(model)
        exchange.task = stated(request.header(RAW_TASK_HEADER)) or self.router.task(model)
        if self.policies is not None:
            targets = self._apply_model_state(exchange, targets)
            if exchange.operation != "embeddings":
                self.policies.on_request(exchange)
        call = Call(request.path.removeprefix("/v1"), request.body, payload, stream, exchange.request_id,
                    request.headers, request.authorization)  # fmt: skip
        if not self.tracing.enabled:
            await self._answer(call, targets, request, send, exchange)
            return
        span = self.tracing.tracer.start_span(
            f"{exchange.operation} {model}", context=parent_context(request.trace_carrier()),  # type: ignore[arg-type]
            kind=trace.SpanKind.CLIENT,
        )  # fmt: skip
        exchange.traceparent = traceparent(span)
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                call.trace_headers = outgoing_headers()
                await self._answer(call, targets, request, send, exchange)
        finally:
            telemetry.span_attributes(span, exchange, payload, self.tracing.capture_content)
            span.end()

    def _apply_model_state(self, ex: Exchange, targets: list[Target]) -> list[Target]:
        """What results rules hold on the model: its fallback route, a review flag, response headers."""
        assert self.policies is not None
        held = self.policies.model_actions(ex.model)
        if not held:
            return targets
        if "degrade" in held:
            ex.extra_headers.append((b"x-medic-model-state", b"degraded"))
        if "review" in held:
            ex.policy_flagged = True
            ex.extra_headers.append((b"x-medic-review", b"required"))
        return targets[1:] if "fallback" in held and len(targets) > 1 else targets

    async def _answer(self, call: Call, targets: list[Target], request: Request, send: Send, ex: Exchange) -> None:
        # The rules that change nothing and read only the request run while the upstream works on the answer, once
        # it has taken WATCH_AFTER_S: an answer that comes sooner does not wait behind them (after_answer runs them).
        waiting = (
            partial(self._while_waiting, ex) if self.policies is not None and ex.operation != "embeddings" else None
        )
        watch = ClientWatch(request.receive, waiting)
        try:
            outcome = await self._forward(call, targets, ex)
            reply = outcome.reply
            if reply.rest is None:
                await self._whole(reply, call.stream, send, ex)
            else:
                guard = self.policies.stream_guard(ex, call.wants_usage) if self.policies is not None else None
                await _relay_stream(reply, send, ex, guard)
        except asyncio.CancelledError:
            if not watch.left:
                raise
            ex.disconnected = True  # the cancellation closed the upstream connection on its way here
            ex.error_type = "client_disconnected"
            if ex.status == 0:
                ex.status = 499
                raise ClientGone from None
        finally:
            watch.stop()
            if self.policies is not None and ex.operation != "embeddings":
                self._after_answer(ex, call.stream)

    async def _whole(self, reply: Reply, streamed: bool, send: Send, ex: Exchange) -> None:
        """A complete answer (also one a stream was asked for and the upstream answered whole): checked in the
        shape the client will parse it, or not sent (UpstreamUnreadable, before any byte)."""
        body, headers = reply.body, reply.headers
        if reply.status != 200:
            ex.error_type = str(reply.status)
            body, headers = _upstream_error(reply)
        else:
            parsed = _learn_body(ex, reply)
            if self.policies is not None and ex.operation != "embeddings":
                stage = "stream" if streamed else "response"
                if parsed is None:
                    self.policies.unreadable(ex, stage, "not JSON")
                else:
                    try:
                        body, decision = self.policies.on_response(ex, body, parsed, stage)
                    except PolicyBlocked as blocked:
                        if self.policies.blocked_answer == "error":
                            raise
                        body, decision = withheld(parsed, blocked), f"blocked; rule={blocked.rule}"
                        ex.finish_reasons = ["content_filter"] * max(1, len(ex.finish_reasons))
                        ex.error_type = "content_filter"
                    headers = [*headers, (b"x-medic-policy", decision.encode())] if decision else headers
        headers = [*headers, *ex.extra_headers] if ex.extra_headers else headers
        await send(start_headers(reply.status, headers, ex.request_id, len(body)))
        await send({"type": "http.response.body", "body": body})
        ex.finished_s = ex.elapsed()

    def _while_waiting(self, ex: Exchange) -> None:
        """The rules that change nothing and read only the request, while the upstream works on the answer;
        a failure is logged (its type, never text) and the exchange goes on."""
        assert self.policies is not None
        try:
            self.policies.while_waiting(ex)
        except Exception as exc:
            log.error("policy rules while waiting failed for request %s: %s", ex.request_id, type(exc).__name__)

    def _after_answer(self, ex: Exchange, streamed: bool) -> None:
        """The rules that change nothing, once the answer has gone out: a failing check must not turn an answer
        already sent into an error, so it is logged (its type, never text) and the exchange goes on."""
        assert self.policies is not None
        try:
            self.policies.after_answer(ex, streamed, ex.output)
        except Exception as exc:
            log.error("policy rules after the answer failed for request %s: %s", ex.request_id, type(exc).__name__)

    async def _forward(self, call: Call, targets: list[Target], ex: Exchange) -> Outcome:
        sent = perf_counter()
        try:
            outcome = await forward(call, targets, self.metrics.forwarding, ex.model)
        except GatewayError:
            _learn_failed_route(ex, targets[-1])  # every route was tried: the failure that ends it is the last's
            raise
        finally:  # time spent on a failed upstream (timeouts, backoff) is not the gateway's overhead either
            ex.upstream_wait_s += perf_counter() - sent
        _learn_route(ex, outcome)
        return outcome


class ClientWatch:
    """Cancels the request's task when its client disconnects, so that the upstream request is cancelled; and
    runs ``waiting`` (work that may wait for the upstream) at the same moment.

    The watcher starts only once a request has waited WATCH_AFTER_S: by then it runs while the gateway
    would otherwise idle on the upstream, and the many fast requests never pay for it. A client that left
    earlier is seen as soon as it starts, since the server remembers the disconnect.
    """

    __slots__ = ("_armed", "_receive", "_task", "_timer", "_waiting", "_watcher", "left")

    def __init__(self, receive: Receive, waiting: Callable[[], None] | None = None) -> None:
        self._task = asyncio.current_task()
        self._receive = receive
        self._waiting = waiting
        self._armed = True
        self._watcher: asyncio.Future[None] | None = None
        self.left = False
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)

    def _start(self) -> None:
        if self._waiting is not None:
            self._waiting()
        self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if self._armed and self._task is not None:
            self.left = True
            self._task.cancel()

    def stop(self) -> None:
        if self.left and self._task is not None:
            self._task.uncancel()  # the cancellation was ours and has been handled
        self._armed = False
        self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


def _parse(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object.",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return payload


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise ModelNotFound("You must provide a model parameter.", param="model")
    return model


def _learn_route(ex: Exchange, outcome: Outcome) -> None:
    ex.upstream = outcome.target.upstream.name
    ex.provider = provider_name(outcome.target.upstream.config.provider)
    ex.upstream_model = outcome.target.model
    ex.attempts = outcome.attempts
    ex.status = outcome.reply.status


def _learn_failed_route(ex: Exchange, target: Target) -> None:
    ex.upstream = target.upstream.name
    ex.provider = provider_name(target.upstream.config.provider)
    ex.upstream_model = target.model


def _read_json(body: bytes) -> Any:
    """The body as the official SDKs parse it (a byte order mark, NaN and Infinity included); None if no client
    could read it as JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError and json.JSONDecodeError both are
        return None


def _upstream_error(reply: Reply) -> tuple[bytes, RawHeaders]:
    """An upstream's error: passed on when it is JSON (an OpenAI error, or a server's own, such as the 422
    FastAPI-based servers send, which clients read), else (an HTML error page, plain text) an ``upstream_error``
    envelope with the upstream's status."""
    if isinstance(_read_json(reply.body), dict):
        return reply.body, reply.headers
    headers = [(k, v) for k, v in reply.headers if k != b"content-type"]
    message = f"The upstream answered {reply.status} with a body that is not an OpenAI error."
    return render_error(message, "upstream_error", None, "upstream_error"), [*headers, JSON]


def _learn_body(ex: Exchange, reply: Reply) -> dict[str, Any] | None:
    """Learns usage, model and output from a complete answer; returns its parsed body (parsed once), or None
    for a body that is not a JSON object."""
    body = _read_json(reply.body)
    if not isinstance(body, dict):
        return None
    usage = body.get("usage")
    ex.usage = usage if isinstance(usage, dict) else None
    ex.response_model = body.get("model")
    choices = body.get("choices")
    if isinstance(choices, list):
        _learn_choices(ex, [c for c in choices if isinstance(c, dict)])
    return body


def _learn_choices(ex: Exchange, choices: list[dict[str, Any]]) -> None:
    ex.finish_reasons = [c["finish_reason"] for c in choices if c.get("finish_reason")]
    for choice in choices:
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(text, list):  # text parts
            text = "".join(p.get("text", "") for p in text if isinstance(p, dict) and isinstance(p.get("text"), str))
        ex.output.append(text if isinstance(text, str) else "")


async def _relay_stream(reply: Reply, send: Send, ex: Exchange, guard: StreamGuard | None) -> None:
    """Relay events as they arrive, learning from them on the way; the upstream connection always closes."""
    summary = StreamSummary(strip_usage=reply.usage_injected)
    try:
        headers = [*reply.headers, *ex.extra_headers] if ex.extra_headers else reply.headers
        await send(start_headers(200, headers, ex.request_id, None))
        await _pump(reply, send, summary, ex, guard)
    except OSError:  # the client's socket failed under a write: it left
        ex.disconnected = True
        ex.error_type = "client_disconnected"
    finally:
        if reply.close is not None:
            reply.close()
        ex.finished_s = ex.elapsed()
        ex.usage = summary.usage
        ex.response_model = summary.model
        ex.finish_reasons = list(summary.finish_reasons.values())
        ex.output = ["".join(summary.content[i]) for i in sorted(summary.content)]
        if guard is not None and guard.unreadable:
            ex.error_type = ex.error_type or "upstream_unreadable"
        elif guard is not None and guard.blocked:
            ex.finish_reasons = ["content_filter"]
            ex.error_type = ex.error_type or "content_filter"
        elif not summary.done and ex.error_type is None:
            ex.error_type = "stream_incomplete"


async def _pump(reply: Reply, send: Send, summary: StreamSummary, ex: Exchange, guard: StreamGuard | None) -> None:
    """Forward every complete event as soon as it arrives (or, with a policy guard, as soon as the guard
    releases it); events that arrived together leave together. A guard that blocks ends the stream."""
    splitter = EventSplitter()
    cut = _Cut()
    async for chunk in _chunks(reply, ex, cut):
        out = _events(splitter.feed(chunk), summary, guard)
        if out:
            if ex.first_token_s is None and summary.content:
                ex.first_token_s = ex.elapsed()
            body = out[0] if len(out) == 1 else b"".join(out)
            await send({"type": "http.response.body", "body": body, "more_body": True})
        if guard is not None and guard.blocked and not guard.waiting_for_usage:
            break
    out = [] if guard is None else guard.stop_draining()
    if guard is None or not guard.blocked:
        last = splitter.last()  # an upstream that ended without the blank line: its last event is read too
        out = _events([last] if last is not None else [], summary, guard)
        if guard is not None and not guard.blocked:
            out += guard.end()
    if not summary.done and (guard is None or not guard.blocked):
        # Cut off, or ended without [DONE]: an error event, so that the client's SDK raises instead of taking a
        # truncated answer for a complete one.
        ex.error_type = ex.error_type or ("upstream_stream_broken" if cut.broken else "stream_incomplete")
        message = "The upstream's stream ended before the answer was complete."
        out.append(error_event(message, "upstream_stream_broken" if cut.broken else "upstream_stream_incomplete"))
    await send({"type": "http.response.body", "body": b"".join(out), "more_body": False})


def _events(events: list[bytes], summary: StreamSummary, guard: StreamGuard | None) -> list[bytes]:
    """What leaves of these events: each read on the way (summary), then held or released by the guard."""
    out = [event for event in map(summary.inspect, events) if event is not None]
    if guard is not None:
        out = [released for event in out for released in guard.feed(event)]
    return out


class _Cut:
    __slots__ = ("broken",)

    def __init__(self) -> None:
        self.broken = False


async def _chunks(reply: Reply, ex: Exchange, cut: _Cut) -> AsyncIterator[bytes]:
    yield reply.body
    assert reply.rest is not None
    iterator = aiter(reply.rest)
    while True:
        waited = perf_counter()
        try:
            chunk = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception:  # the upstream broke mid-stream: ours ends with an error event
            cut.broken = True
            return
        finally:
            ex.upstream_wait_s += perf_counter() - waited
        yield chunk
