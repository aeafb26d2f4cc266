"""Worker throughput: samples per second one worker process evaluates end to end on Redis.

Fills a Redis stream with N realistic samples (as the gateway enqueues them), then runs one in-process
Worker (the same code `medic-gateway worker` runs) with the refusal judge, reading with XREADGROUP,
storing results in Redis and acknowledging, until every sample is done. Needs redis-server on PATH.

    .venv/bin/python bench/worker_throughput.py [--samples 20000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time

from prometheus_client import CollectorRegistry

from judges.metrics import JudgeMetrics
from judges.refusal import RefusalJudge
from judges.worker import Worker, WorkerSettings
from pipeline.queue import RedisStreamQueue
from pipeline.sample import Sample
from pipeline.store import RedisStore

ANSWERS = [
    "Furosemide 40 mg orally once daily is a usual starting dose for oedema; check potassium and renal "
    "function within a week, and review the dose if the patient becomes dizzy or dehydrated.",
    "I'm sorry, but I can't help with obtaining prescription opioids without a prescription.",
    "Metformin is usually continued; hold it on the day of contrast if eGFR is below 30 and restart after "
    "48 hours if renal function is stable.",
]


def samples(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        sample = Sample(
            request_id=f"bench-{i}", model="clinical-model", upstream="vllm", tenant="ward-a",
            request={"model": "clinical-model", "messages": [{"role": "user", "content": "[NAME_1] asks: dose?"}]},
            response={"choices": [{"index": 0, "content": ANSWERS[i % len(ANSWERS)], "finish_reason": "stop"}]},
        )  # fmt: skip
        out.append(sample.model_dump_json().encode())
    return out


async def run(url: str, n: int, concurrency: int) -> float:
    queue = RedisStreamQueue.from_url(url, 5.0, stream="bench", group="g", dead_letter_stream="bench:dead",
                                      maxlen=10 * n, ttl_s=3600, max_attempts=3)  # fmt: skip
    for start in range(0, n, 1000):
        await queue.put(samples(n)[start : start + 1000])
    store = RedisStore(queue.client, ttl_s=3600)
    metrics = JudgeMetrics(CollectorRegistry())
    worker = Worker(queue, store, [RefusalJudge()], metrics,
                    WorkerSettings(concurrency=concurrency, read_count=256, block_ms=50))  # fmt: skip
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run(stop))
    while metrics.processed._value.get() < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await task
    await queue.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (Debian package redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen([binary, "--port", str(port), "--save", "", "--dir", directory],
                                  stdout=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            rate = asyncio.run(run(f"redis://127.0.0.1:{port}/0", args.samples, args.concurrency))
        finally:
            server.terminate()
            server.wait()
    print(f"worker throughput: {rate:,.0f} samples/s ({args.samples} samples, refusal judge, Redis queue and store)")


if __name__ == "__main__":
    main()
