"""Retries with backoff (upstreams/retry.py: one policy for every outbound call), then fallback to the model's
next upstream. A stream is retried only until its first byte arrives, since the client has seen nothing before
then. When every route is spent, the last upstream error is passed on as the upstream sent it, or the gateway
answers 502 (unreachable) or 504 (timeout).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter

import aiohttp

from protocol.errors import GatewayError, UpstreamTimeout, UpstreamUnreachable
from upstreams.http import Call, Reply, Upstream
from upstreams.metrics import ForwardingMetrics
from upstreams.retry import backoff_s, retry_after_s, transient


@dataclass(slots=True, frozen=True)
class Target:
    """One route of a model: an upstream and the model's name there."""

    upstream: Upstream
    model: str


@dataclass(slots=True)
class Outcome:
    reply: Reply
    target: Target
    attempts: int


async def forward(call: Call, targets: list[Target], metrics: ForwardingMetrics, public_model: str) -> Outcome:
    """Send a call along its routes; return the first usable reply, or the last upstream error."""
    failure: GatewayError | None = None
    attempts = 0
    for position, target in enumerate(targets):
        if position:
            metrics.fallbacks.labels(public_model, targets[position - 1].upstream.name).inc()
        last_route = position == len(targets) - 1
        config = target.upstream.config
        for attempt in range(config.retries + 1):
            if attempt:
                metrics.retries.labels(target.upstream.name, _reason(failure)).inc()
                retry_after = retry_after_s(failure.reply.headers) if isinstance(failure, _StatusFailure) else None
                await asyncio.sleep(backoff_s(attempt, config.backoff_ms, config.backoff_max_ms, retry_after))
            attempts += 1
            started = perf_counter()
            try:
                reply = await target.upstream.send(call, target.model)
            except aiohttp.ConnectionTimeoutError:
                failure = UpstreamUnreachable(f"upstream {target.upstream.name!r} did not accept a connection")
                continue
            except TimeoutError:
                failure = UpstreamTimeout(f"upstream {target.upstream.name!r} timed out")
                break
            except (aiohttp.ClientError, OSError):
                failure = UpstreamUnreachable(f"upstream {target.upstream.name!r} is unreachable")
                continue
            metrics.upstream_latency.labels(target.upstream.name).observe(perf_counter() - started)
            final = last_route and attempt == config.retries
            if final or not transient(reply.status, reply.body):
                return Outcome(reply, target, attempts)
            failure = _StatusFailure(reply)
    # Only an exception can end the loops here: a retryable status on the last try was returned above.
    assert failure is not None
    raise failure


class _StatusFailure(GatewayError):
    def __init__(self, reply: Reply) -> None:
        super().__init__(f"upstream answered {reply.status}")
        self.reply = reply
        self.status = reply.status


def _reason(failure: GatewayError | None) -> str:
    if isinstance(failure, _StatusFailure):
        return "rate_limited" if failure.status == 429 else "server_error" if failure.status >= 500 else "client_error"
    if isinstance(failure, UpstreamTimeout):
        return "timeout"
    return "connection_error"
