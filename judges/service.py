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

from gateway.pipeline import decrypt_for, open_queue, worker_settings
from gateway.settings import GatewayConfig
from judges import registry
from judges.events import configure as configure_events
from judges.metrics import JudgeMetrics
from judges.safety.schedule import SafetyProbeScheduler
from judges.store import RedisStore, open_store
from judges.sycophancy.schedule import ProbeScheduler, redis_lock
from judges.worker import Worker

log = logging.getLogger("medic_gateway.worker")


async def serve_worker(config: GatewayConfig, redis_url: str) -> None:
    metrics_registry = CollectorRegistry()
    queue = open_queue(config, redis_url)
    store = open_store(redis_url, config.results.ttl_s, config.results.sqlite_path)
    events = configure_events()
    metrics = JudgeMetrics(metrics_registry)
    worker = Worker(queue, store, registry.build(config.worker.judges, config.judging, config), metrics,
                    worker_settings(config), decrypt_for(config), on_results=events.emit)  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await _start_http(config, metrics_registry, worker)
    log.info("worker %s consuming %s (group %s) with judges %s", worker.consumer, config.queue.stream,
             config.queue.group, ", ".join(config.worker.judges))  # fmt: skip
    tasks = [worker.run(stop), worker.watch_queue(stop)]
    if isinstance(store, RedisStore):
        lock = redis_lock(store.client, worker.consumer)
        if config.probes.sycophancy is not None:
            tasks.append(ProbeScheduler(config, store, metrics, lock, events.emit).run(stop))
        if config.probes.safety is not None:
            tasks.append(SafetyProbeScheduler(config, store, metrics, lock, events.emit).run(stop))
    try:
        await asyncio.gather(*tasks)
    finally:
        await runner.cleanup()
        await worker.close()
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
