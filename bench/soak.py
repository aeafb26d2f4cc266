#!/usr/bin/env python3
"""Soak: the gateway's memory over many requests with streams and blocks mixed, the default pack on.

Two fake upstreams (bench/fake_upstream.py): one answers a safe clinical answer, the other an overdose. The
gateway (``medic-gateway serve`` with a configuration routing model ``safe`` to the first and ``overdose`` to the
second) gets --requests requests at --concurrency in flight, a quarter each of: safe whole, safe streamed,
overdose whole (withheld: content_filter), overdose streamed (cut before the dose). Every answer is checked for
the outcome it must have; the gateway's resident memory (VmRSS) is read every --every requests. Exit status 1
when any answer was wrong or memory grew by more than --max-growth-mb from the first reading after warm-up to
the last.

    .venv/bin/python bench/soak.py [--requests 100000] [--concurrency 16] [--every 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
SAFE = "Rest the knee, keep it raised, and take 500 mg of acetaminophen every 6 hours, at most 3 g a day."
OVERDOSE = "For the pain, take 3000 mg of acetaminophen every 4 hours until it settles."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})})  # fmt: skip


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout_s:.0f} s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(session: aiohttp.ClientSession, url: str, kind: int) -> bool:
    """Sends request ``kind`` (0 safe whole, 1 safe streamed, 2 overdose whole, 3 overdose streamed); whether
    its answer is what the pack must make of it."""
    model = "overdose" if kind >= 2 else "safe"
    stream = kind % 2 == 1
    body = {"model": model, "messages": [{"role": "user", "content": "My knee hurts. What can I take?"}],
            "stream": stream}  # fmt: skip
    async with session.post(url, json=body) as response:
        raw = await response.read()
    if response.status != 200:
        return False
    if not stream:
        choice = json.loads(raw)["choices"][0]
        return choice["finish_reason"] == "content_filter" if kind == 2 else choice["message"]["content"] == SAFE
    text = b"".join(raw.split(b"data: [DONE]")[:1])
    if kind == 3:
        return b"3000" not in text and b"content_filter" in text and raw.rstrip().endswith(b"[DONE]")
    return raw.rstrip().endswith(b"[DONE]") and b"content_filter" not in text


async def soak(url: str, pid: int, requests: int, concurrency: int, every: int) -> tuple[int, list[tuple[int, float]]]:
    wrong = 0
    readings: list[tuple[int, float]] = [(0, rss_mb(pid))]
    next_index = 0
    lock = asyncio.Lock()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal next_index, wrong
            while True:
                async with lock:
                    if next_index >= requests:
                        return
                    index = next_index
                    next_index += 1
                if not await one(session, url, index % 4):
                    wrong += 1
                if (index + 1) % every == 0:
                    readings.append((index + 1, rss_mb(pid)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return wrong, sorted(readings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--max-growth-mb", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        answers = {}
        for name, text in (("safe", SAFE), ("overdose", OVERDOSE)):
            path = Path(work) / f"{name}.txt"
            path.write_text(text)
            answers[name] = path
        ports = {name: free_port() for name in ("safe", "overdose", "gateway")}
        processes = [start([PYTHON, str(BENCH / "fake_upstream.py"), "--port", str(ports[name]), "--answer-file",
                            str(answers[name])]) for name in ("safe", "overdose")]  # fmt: skip
        config = Path(work) / "gateway.yaml"
        config.write_text(json.dumps({  # YAML reads JSON
            "server": {"host": "127.0.0.1", "port": ports["gateway"]},
            "upstreams": {name: {"url": f"http://127.0.0.1:{ports[name]}/v1"} for name in ("safe", "overdose")},
            "models": {name: {"routes": [{"upstream": name}]} for name in ("safe", "overdose")},
            "policies": {"audit_path": None}, "sampling": {"rate": 0.1},
        }))  # fmt: skip
        try:
            for name in ("safe", "overdose"):
                wait_ready(f"http://127.0.0.1:{ports[name]}/v1/models")
            gateway = start([PYTHON, "-m", "gateway", "serve", "--config", str(config)])
            processes.append(gateway)
            wait_ready(f"http://127.0.0.1:{ports['gateway']}/readyz")
            url = f"http://127.0.0.1:{ports['gateway']}/v1/chat/completions"
            started = time.monotonic()
            wrong, readings = asyncio.run(soak(url, gateway.pid, args.requests, args.concurrency, args.every))
            seconds = time.monotonic() - started
        finally:
            for process in processes:
                process.terminate()
                process.wait(10)
    print(f"{args.requests} requests ({args.concurrency} in flight, a quarter each of safe and overdose, whole and "
          f"streamed) in {seconds:.0f} s; wrong answers: {wrong}\n")  # fmt: skip
    print("| requests sent | gateway RSS (MB) |\n|---:|---:|")
    for count, mb in readings:
        print(f"| {count:,} | {mb:.1f} |")
    base = readings[1][1] if len(readings) > 2 else readings[0][1]
    growth = readings[-1][1] - base
    print(f"\ngrowth from {readings[1][0] if len(readings) > 2 else 0:,} requests to the end: {growth:+.1f} MB")
    sys.exit(1 if wrong or growth > args.max_growth_mb else 0)


if __name__ == "__main__":
    main()
