#!/usr/bin/env python3
"""What checking a request and normalising a text cost, per call (timeit, best of --repeat rounds).

    .venv/bin/python bench/request_costs.py [--repeat 5]

``protocol.requests.check`` on a one-message chat request, on a system prompt with a 600-character question, and
on 30 messages; ``text.normal.normal`` on ASCII text with nothing to change and on "fifteen grams" (each call on a
new string, so that no call reuses the previous one's result).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from protocol.requests import check, warm_validators
from text.normal import normal

ONE = {"model": "m", "messages": [{"role": "user", "content": "Say hello"}]}
TYPICAL = {"model": "m", "messages": [{"role": "system", "content": "You are a clinical assistant."},
                                      {"role": "user", "content": "hi " * 200}],
           "stream": True, "temperature": 0.2, "max_tokens": 100}  # fmt: skip
LONG = {"model": "m", "messages": [{"role": "user" if i % 2 else "assistant", "content": "x" * 50} for i in range(30)]}


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
    ]
    print("| call | us per call |\n|---|---:|")
    for name, call in rows:
        print(f"| {name} | {us(call, args.repeat):.1f} |")


if __name__ == "__main__":
    main()
