#!/usr/bin/env python3
"""What one sampled exchange costs the gateway's process with the embedded judges (the default): building and
pseudonymising the sample (in the sampler's thread), then the worker's batch: parsing, the judges, storing the
results in SQLite (in a thread) and the metrics (in the event loop). CPU time of the whole process, per sample,
for batches of 15 (the sampler's linger gathers about that many at 3,000 requests a second and 10 % sampled).

    .venv/bin/python bench/sample_costs.py [--batches 8] [--batch 15]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from config import single_upstream
from gateway.encoder import encode_batch
from gateway.metrics import Metrics
from gateway.sampler import build_sample
from judges.events import configure as configure_events
from judges.metrics import JudgeMetrics
from judges.runtime import EMBEDDED, build_runtime
from pipeline.queue import open_queue
from pipeline.store import open_store
from protocol.exchange import Exchange


def exchange(index: int) -> Exchange:
    """The benchmark's exchange (bench/fake_upstream.py's answer to bench/run.py's question), as the proxy ends it."""
    ex = Exchange(f"{index:032x}", "chat", tenant="")
    ex.model, ex.status, ex.upstream, ex.provider = "bench-model", 200, "default", "openai"
    ex.payload = {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}
    ex.output, ex.finish_reasons = ["Hello! How can I help you today?"], ["stop"]
    ex.usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    return ex


async def main(batches: int, size: int) -> None:
    config = single_upstream("http://127.0.0.1:9/v1")
    with tempfile.TemporaryDirectory() as directory:
        queue = open_queue(config, None)
        store = open_store(None, config.results.ttl_s, str(Path(directory) / "results.sqlite3"))
        runtime = build_runtime(config, queue, store, JudgeMetrics(Metrics().registry), configure_events(),
                                consumer=EMBEDDED)  # fmt: skip
        print(f"judges: {', '.join(judge.name for judge in runtime.worker.judges)}; batches of {size}")
        encoding, judging, count = 0.0, 0.0, 0
        for batch in range(batches + 2):  # the first two warm up
            started = time.process_time()
            payloads = encode_batch([build_sample(exchange(batch * size + i), "rate") for i in range(size)],
                                    config.sampling.privacy, None)  # fmt: skip
            encoded = time.process_time()
            await queue.put([p for p in payloads if p is not None])
            await runtime.worker.process(await queue.read(EMBEDDED, size, 10))
            if batch >= 2:
                encoding += encoded - started
                judging += time.process_time() - encoded
                count += size
        await runtime.close()
        await store.close()
    print(f"build and pseudonymise: {encoding / count * 1e6:.0f} us CPU per sample")
    print(f"queue, judges, store, metrics: {judging / count * 1e6:.0f} us CPU per sample")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=15)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.batches, arguments.batch))
