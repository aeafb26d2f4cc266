#!/usr/bin/env python3
"""Client CPU per judge call, side by side: the judges' aiohttp backend against the official ``openai`` SDK.

Why cef-llm does not use the SDK: a sample makes 22 calls, so the client's CPU per call bounds how many
samples one worker process can judge. Both clients send the same structured-output answer call (the
cef-llm ``cef_answer`` request) to the fake judge ``bench/fake_upstream.py --judge`` in a child process (50 ms
per call), ``--calls`` times with ``--concurrency`` in flight; this process's CPU time over the calls is the figure.

    .venv/bin/python bench/judge_client.py [--calls 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from fidelity_speed import FakeProcess  # bench/, beside this script

from config import JudgeLLMConfig
from judges.backends import open_backend
from judges.fidelity.llm import ANSWER, ANSWER_SCHEMA, document

NOTE = "Started furosemide 40 mg twice daily. Potassium was 3.1 on admission. She denies chest pain. " * 8
QUESTION = "Does the text state that potassium was 3.1?"
MESSAGES = [
    {"role": "system", "content": ANSWER},
    {"role": "user", "content": f"{document(NOTE)}\n\nQUESTION: {QUESTION}"},
]


async def measure(call: Callable[[], Awaitable[str]], calls: int, concurrency: int) -> tuple[float, float]:
    """(client CPU ms per call, calls per second) over ``calls`` calls, ``concurrency`` in flight."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            reply = await call()
            assert '"answer"' in reply

    await asyncio.gather(*(one() for _ in range(concurrency)))  # warm-up: connections opened
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return (time.process_time() - cpu) * 1000 / calls, calls / (time.perf_counter() - wall)


async def run(base_url: str, calls: int, concurrency: int) -> list[tuple[str, float, float]]:
    from openai import AsyncOpenAI

    backend = open_backend(JudgeLLMConfig(model="judge", base_url=base_url, concurrency=concurrency))
    sdk = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=3)
    response_format: Any = {"type": "json_schema",
                            "json_schema": {"name": "cef_answer", "schema": ANSWER_SCHEMA, "strict": True}}  # fmt: skip

    async def with_sdk() -> str:
        reply = await sdk.chat.completions.create(model="judge", messages=cast(Any, MESSAGES), temperature=0,
                                                  max_tokens=1024, response_format=response_format)  # fmt: skip
        return reply.choices[0].message.content or ""

    try:
        rows = [("aiohttp backend (judges/backends.py)",
                 *await measure(lambda: backend.complete(MESSAGES, "cef_answer", ANSWER_SCHEMA), calls, concurrency)),
                ("openai SDK AsyncOpenAI", *await measure(with_sdk, calls, concurrency))]  # fmt: skip
    finally:
        await backend.close()
        await sdk.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    args = parser.parse_args()
    fake = FakeProcess(args.latency_ms, use_uvloop=False)
    try:
        rows = asyncio.run(run(fake.base_url, args.calls, args.concurrency))
    finally:
        fake.close()
    print(f"`{shlex.join(['python', 'bench/judge_client.py', *sys.argv[1:]])}`\n")
    print(f"{args.calls} calls, {args.concurrency} in flight, fake judge {args.latency_ms:g} ms per call\n")
    print("| client | CPU ms per call | calls/s |\n|---|---:|---:|")
    for name, cpu_ms, rate in rows:
        print(f"| {name} | {cpu_ms:.2f} | {rate:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
