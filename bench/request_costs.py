#!/usr/bin/env python3
"""What checking a request and normalising a text cost, per call (timeit, best of --repeat rounds).

    .venv/bin/python bench/request_costs.py [--repeat 5]

``protocol.requests.check`` on a one-message chat request, on a system prompt with a 600-character question, and
on 30 messages; ``text.normal.normal`` on ASCII text with nothing to change and on "fifteen grams" (each call on a
new string, so that no call reuses the previous one's result); ``telemetry.observe``, the metrics of a finished
exchange; and the default pack's four stages (``on_request``, ``while_waiting``, ``on_response``, ``after_answer``)
on the exchange bench/run.py times (its question, bench/fake_upstream.py's answer).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

import orjson
from prometheus_client import CollectorRegistry

from config import PoliciesConfig
from gateway import telemetry
from gateway.metrics import Metrics
from policies.setup import build_engine
from protocol.exchange import Exchange
from protocol.requests import check, warm_validators
from text.normal import normal

ONE = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}]}
TYPICAL = {"model": "m", "messages": [{"role": "system", "content": "You are a clinical assistant."},
                                      {"role": "user", "content": "hi " * 200}],
           "stream": True, "temperature": 0.2, "max_tokens": 100}  # fmt: skip
LONG = {"model": "m", "messages": [{"role": "user" if i % 2 else "assistant", "content": "x" * 50} for i in range(30)]}


QUESTION = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
ANSWER = orjson.dumps({
    "id": "x", "object": "chat.completion", "created": 1, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
})  # fmt: skip


def exchange() -> Exchange:
    ex = Exchange("0" * 32, "chat", tenant="")
    ex.model, ex.payload, ex.upstream, ex.provider, ex.status = "bench-model", QUESTION, "default", "openai", 200
    return ex


def policies() -> Callable[[], object]:
    engine = build_engine(PoliciesConfig(), CollectorRegistry())
    assert engine is not None

    def stages() -> None:
        ex = exchange()
        engine.on_request(ex)
        engine.while_waiting(ex)
        parsed = orjson.loads(ANSWER)
        engine.on_response(ex, ANSWER, parsed)
        engine.after_answer(ex, False, [parsed["choices"][0]["message"]["content"]])

    return stages


def observed(metrics: Metrics) -> Callable[[], object]:
    def observe() -> None:
        ex = exchange()
        ex.finished_s, ex.usage = 0.001, {"prompt_tokens": 5, "completion_tokens": 9}
        telemetry.observe(metrics, ex, "/v1/chat/completions")

    return observe


def us(call: Callable[[], object], repeat: int, number: int = 5000) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warm_validators()
    rows = [
        ("check: one message", lambda: check("chat", ONE)),
        ("check: system prompt and a 600-character question", lambda: check("chat", TYPICAL)),
        ("check: 30 messages", lambda: check("chat", LONG)),
        ("normal: ASCII, nothing to change", lambda: normal("Hello! How can I help you today?"[:-1] + "?")),
        ("normal: 'fifteen grams'", lambda: normal("fifteen grams"[:-1] + "s")),
        ("telemetry: a finished exchange's metrics", observed(Metrics())),
        ("policies: the default pack's four stages on the benchmark's exchange", policies()),
    ]
    print("| call | us per call |\n|---|---:|")
    for name, call in rows:
        print(f"| {name} | {us(call, args.repeat):.1f} |")


if __name__ == "__main__":
    main()
