"""`medic-gateway worker`: a judge worker process consuming the gateway's Redis stream.

It serves /metrics and /healthz on worker.host:worker.port, and on SIGTERM or SIGINT stops reading and
finishes the batches in flight before it exits. Several workers share one consumer group and scale out.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from config import GatewayConfig
from judges.events import configure as configure_events
from judges.metrics import JudgeMetrics
from judges.rounds import redis_lock
from judges.runtime import build_runtime
from judges.worker import Worker, worker_name
from pipeline.queue import open_queue
from pipeline.store import RedisStore, open_store

log = logging.getLogger("medic_gateway.worker")


async def serve_worker(config: GatewayConfig, redis_url: str) -> None:
    metrics_registry = CollectorRegistry()
    queue = open_queue(config, redis_url)
    store = open_store(redis_url, config.results.ttl_s, config.results.sqlite_path)
    events = configure_events()
    metrics = JudgeMetrics(metrics_registry)
    consumer = worker_name()
    # probe rounds need a lock the workers share: only with results in Redis
    lock = redis_lock(store.client, consumer) if isinstance(store, RedisStore) else None
    runtime = build_runtime(config, queue, store, metrics, events, consumer=consumer, lock=lock)
    worker = runtime.worker
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await _start_http(config, metrics_registry, worker)
    log.info("worker %s consuming %s (group %s) with judges %s", worker.consumer, config.queue.stream,
             config.queue.group, ", ".join(config.worker.judges))  # fmt: skip
    tasks = [worker.run(stop), worker.watch_queue(stop), *(probe.run(stop) for probe in runtime.probes)]
    try:
        await asyncio.gather(*tasks)
    finally:
        await runner.cleanup()
        await runtime.close()
        await queue.close()
        await store.close()
        events.shutdown()
    log.info("worker %s stopped", worker.consumer)


async def _start_http(config: GatewayConfig, metrics_registry: CollectorRegistry, worker: Worker) -> web.AppRunner:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics_registry), headers={"content-type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok" if worker.healthy else "queue_unavailable"},
                                 status=200 if worker.healthy else 503)  # fmt: skip

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.worker.host, config.worker.port).start()
    return runner
