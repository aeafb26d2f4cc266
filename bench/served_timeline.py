#!/usr/bin/env python3
"""Where a served request's time goes: `medic-gateway` with timestamps around the policy engine's stages and
the upstream's write and first bytes, for `bench/run.py --gateway-cmd`.

    .venv/bin/python bench/run.py --only direct,medic-gateway --no-stream --medec-body --medec-answer-words 300 \\
        --gateway-args "--sample-rate 0" --duration 3 --gateway-config /tmp/pack-on.yaml \\
        --gateway-cmd ".venv/bin/python bench/served_timeline.py"

When the gateway is stopped it writes, to $SERVED_TIMELINE (default served-timeline.txt), the median over the
requests it served (the first fifth left out as warm-up) of each moment, in microseconds from the start of
`Proxy.handle`: forwarding starts and ends, the upstream request's first write (aiohttp's StreamWriter) and the
first bytes of its answer (aiohttp's ResponseHandler; both private to aiohttp, so this may need changing with
it), the answer sent; each stage's start and end (`.s`, `.e`) and duration (`.us`): on_request, while_waiting
(and in it the prompt-injection check and the request's red flags), on_response, after_answer. A diagnostic:
the wrappers add a few microseconds of their own.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
from collections.abc import Callable
from time import perf_counter
from typing import Any

import aiohttp.client_proto
import aiohttp.http_writer

from gateway import proxy
from gateway.cli import main
from policies import engine
from policies.checks import injection, red_flags

spans: dict[str, list[tuple[float, float]]] = {}  # this request's: label -> (start, end) of each call
served: list[dict[str, float]] = []


def timed(owner: Any, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans.setdefault(label, []).append((start, perf_counter()))

    setattr(owner, name, wrapper)


for stage in ("on_request", "while_waiting", "on_response", "after_answer"):
    timed(engine.PolicyEngine, stage, stage)
timed(injection.PromptInjectionCheck, "__call__", "prompt_injection")
timed(red_flags, "red_flags", "red_flags")
timed(aiohttp.http_writer.StreamWriter, "_write", "upstream write")
timed(aiohttp.http_writer.StreamWriter, "_writelines", "upstream write")
timed(aiohttp.client_proto.ResponseHandler, "data_received", "upstream bytes")
handle = proxy.Proxy.handle


async def timed_handle(self: proxy.Proxy, request: Any, send: Callable[..., Any], exchange: Any) -> None:
    spans.clear()
    start = perf_counter()
    moments: dict[str, float] = {}
    forward = self._forward

    async def timed_forward(*args: Any) -> Any:
        moments["forwarding starts"] = perf_counter()
        try:
            return await forward(*args)
        finally:
            moments["forwarding ends"] = perf_counter()

    async def timed_send(message: dict[str, Any]) -> None:
        await send(message)
        if message.get("type") == "http.response.body":
            moments["answer sent"] = perf_counter()

    self._forward = timed_forward
    try:
        await handle(self, request, timed_send, exchange)
    finally:
        del self._forward
        record = {name: moment - start for name, moment in moments.items()}
        for label, calls in spans.items():
            first, end = calls[0]
            if label.startswith("upstream"):
                record[f"{label} (first)"] = first - start
                continue
            record[f"{label}.s"], record[f"{label}.e"], record[f"{label}.us"] = first - start, end - start, end - first
        served.append(record)


proxy.Proxy.handle = timed_handle


def report(*_: object) -> None:
    kept = served[len(served) // 5 :]
    medians = {
        name: statistics.median(r[name] for r in kept if name in r) * 1e6 for name in {n for r in kept for n in r}
    }
    with open(os.environ.get("SERVED_TIMELINE", "served-timeline.txt"), "w", encoding="utf-8") as out:
        out.write(f"{len(kept)} requests, medians in µs from the start of Proxy.handle\n")
        for name, value in sorted(medians.items(), key=lambda item: (item[0].endswith(".us"), item[1])):
            out.write(f"{name:32s} {value:8.1f}\n")
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, report)
    sys.argv = ["medic-gateway", *sys.argv[1:]]
    main()
