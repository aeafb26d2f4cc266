"""The evaluation pipeline end to end: gateway -> queue -> judge workers -> results, embedded and on Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import redis

from config import GatewayConfig, QueueConfig, ResultsConfig, SamplingConfig, WorkerConfig, single_upstream
from judges.metrics import JudgeMetrics
from judges.worker import Worker, WorkerSettings
from pipeline.queue import RedisStreamQueue
from pipeline.sample import Result, Sample
from pipeline.store import RedisStore
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstream import FakeUpstream, Json, chat_completion

REFUSAL = "I'm sorry, but I can't help with that request."
NOTE = "Patient Jane Roe (MRN 483920, DOB 03/14/1961) was seen on 2024-01-09. Call 617-555-0142."


def sampled(fake: FakeUpstream, tmp_path: Path, **sampling: Any) -> GatewayConfig:
    config = single_upstream(fake.url)
    return config.model_copy(update={
        "sampling": SamplingConfig(**{"rate": 1.0, "max_samples_per_s": 10_000, **sampling}),
        "results": ResultsConfig(sqlite_path=str(tmp_path / "results.sqlite3")),
        "queue": QueueConfig(claim_idle_ms=300),
    })  # fmt: skip


def ask(gw: GatewayServer, n: int, content: str = "Is 40 mg of furosemide safe?") -> list[str]:
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    ids = []
    for _ in range(n):
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": content}]
        )
        ids.append(raw.headers["x-request-id"])
    return ids


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def evaluations(gw: GatewayServer, request_id: str) -> list[dict[str, Any]]:
    response = http.request(gw.url, "GET", f"/v1/evaluations/{request_id}")
    return response.json()["data"] if response.status == 200 else []


# ------------------------------------------------------------------------------------------- embedded


def test_embedded_every_request_is_judged_and_served_with_evidence(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(chat_completion(REFUSAL)))
    gw = gateway(sampled(fake, tmp_path))
    ids = ask(gw, 5)
    wait_until(lambda: all(len(evaluations(gw, i)) == 2 for i in ids))
    results = {r["indicator"]: r for r in evaluations(gw, ids[0])}
    assert results["refusal"]["score"] == 1.0 and results["refusal"]["label"] == "refused"
    assert results["refusal"]["evidence"] and results["refusal"]["method"] == "refusal-rules/1"
    assert results["response_length"]["score"] == len(REFUSAL.split())
    listing = http.request(gw.url, "GET", "/v1/evaluations?indicator=refusal&min_score=0.5&limit=3").json()
    assert len(listing["data"]) == 3 and all(r["indicator"] == "refusal" for r in listing["data"])
    text = gw.metrics()
    assert http.metric(text, "medic_gateway_sampling_decisions_total", decision="rate") == 5
    assert http.metric(text, "medic_judges_score_count", indicator="refusal", method="refusal-rules/1") == 5
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check


SUMMARY_NOTE = (
    "Started furosemide 40 mg twice daily. Potassium was 3.1 on admission. She denies chest pain. "
    "The left knee is swollen. Urine culture grew Escherichia coli."
)


def summarise(gw: GatewayServer) -> str:
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": f"Summarise the following note:\n{SUMMARY_NOTE}"}]
    )
    return raw.headers["x-request-id"]


@pytest.mark.parametrize("judge_model", [False, True], ids=["cef-lite", "cef-llm"])
def test_fidelity_is_judged_on_live_traffic_with_the_configured_method(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path,
    judge_model: bool,
) -> None:  # fmt: skip
    from config import JudgeLLMConfig, JudgingConfig
    from tests.fakes.judge import FakeJudge

    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(chat_completion(SUMMARY_NOTE.replace("40 mg", "80 mg"))))
    judge = FakeJudge().start()
    config = sampled(fake, tmp_path)
    if judge_model:
        config = config.model_copy(
            update={"judging": JudgingConfig(llm=JudgeLLMConfig(model="j", base_url=judge.base_url))}
        )
    try:
        gw = gateway(config)
        request_id = summarise(gw)
        wait_until(lambda: len(evaluations(gw, request_id)) == 6)
        text = gw.metrics()
    finally:
        judge.stop()
    results = {r["indicator"]: r for r in evaluations(gw, request_id)}
    conformity = results["fidelity_conformity"]
    assert conformity["score"] is not None and conformity["score"] < 1.0 and conformity["evidence"]
    assert conformity["method"].startswith("cef-llm/j/" if judge_model else "cef-lite/3")
    assert results["fidelity_coverage"]["label"] == "transform"
    assert http.metric(text, "medic_judges_score_count", indicator="fidelity_conformity", model="m",
                       method=conformity["method"]) == 1  # fmt: skip
    assert (len(judge.calls) == 22) is judge_model


def test_sampling_rate_zero_judges_nothing_and_header_forces_a_sample(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    fake = fake_upstream()
    gw = gateway(sampled(fake, tmp_path, rate=0.0, debug_header="x-medic-sample"))
    ids = ask(gw, 3)
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)
    forced = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "hi"}], extra_headers={"x-medic-sample": "1"}
    ).headers["x-request-id"]
    wait_until(lambda: len(evaluations(gw, forced)) == 2)
    assert all(evaluations(gw, i) == [] for i in ids)
    text = gw.metrics()
    assert http.metric(text, "medic_gateway_sampling_decisions_total", decision="not_sampled") == 3
    assert http.metric(text, "medic_gateway_sampling_decisions_total", decision="header") == 1


def test_evaluations_need_the_admin_key_when_the_gateway_has_keys(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from config import KeyConfig

    monkeypatch.setenv("TEST_CLIENT_KEY", "sk-ward")
    monkeypatch.setenv("TEST_ADMIN_KEY", "sk-admin")
    config = sampled(fake_upstream(), tmp_path).model_copy(
        update={"keys": [KeyConfig(tenant="ward", key_env="TEST_CLIENT_KEY")]}
    )
    locked = gateway(config)
    assert http.request(locked.url, "GET", "/v1/evaluations").status == 403
    admin = config.model_copy(update={"results": config.results.model_copy(update={"admin_key_env": "TEST_ADMIN_KEY"})})
    gw = gateway(admin)
    assert http.request(gw.url, "GET", "/v1/evaluations", headers={"authorization": "Bearer sk-ward"}).status == 401
    ok = http.request(gw.url, "GET", "/v1/evaluations", headers={"authorization": "Bearer sk-admin"})
    assert ok.status == 200 and ok.json()["object"] == "list"
    bad = http.request(gw.url, "GET", "/v1/evaluations?min_score=high", headers={"authorization": "Bearer sk-admin"})
    assert bad.status == 400 and bad.json()["error"]["param"] == "min_score"


# ---------------------------------------------------------------------------------------------- Redis


def on_redis(
    gateway: Callable[..., GatewayServer], fake: FakeUpstream, tmp_path: Path, redis: RedisServer
) -> GatewayServer:
    """A gateway sampling every request into the Redis stream, with no judges of its own."""
    config = sampled(fake, tmp_path).model_copy(update={"worker": WorkerConfig(port=0)})
    return gateway(config, redis_url=redis.url)


def start_worker(url: str, tmp_path: Path, name: str, port: int = 0) -> subprocess.Popen[bytes]:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        "upstreams: {u: {url: 'http://127.0.0.1:9/v1'}}\nmodels: {'*': {routes: [{upstream: u}]}}\n"
        f"queue: {{claim_idle_ms: 300}}\nworker: {{port: {port}}}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "worker", "--config", str(config), "--redis-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stored(url: str, ids: list[str]) -> int:
    client = redis.Redis.from_url(url)
    try:
        return sum(client.hlen(f"medic:results:req:{i}") for i in ids)
    finally:
        client.close()


def test_redis_every_sample_gives_exactly_its_results(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    fake = fake_upstream()
    gw = on_redis(gateway, fake, tmp_path, redis_server)
    worker = start_worker(redis_server.url, tmp_path, "w1")
    try:
        ids = ask(gw, 40)
        wait_until(lambda: stored(redis_server.url, ids) == 80)
        assert len(evaluations(gw, ids[-1])) == 2
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) in (0, -signal.SIGTERM)


def test_entries_left_by_a_dead_worker_are_reclaimed_once(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    fake = fake_upstream()
    gw = on_redis(gateway, fake, tmp_path, redis_server)
    client = redis.Redis.from_url(redis_server.url)
    client.xgroup_create("medic:samples", "judges", id="0", mkstream=True)
    ids = ask(gw, 20)
    wait_until(lambda: client.xlen("medic:samples") == 20)
    # A worker that read everything and then died (SIGKILL) before acknowledging: all 20 stay pending.
    taken = client.xreadgroup("judges", "dead-worker", {"medic:samples": ">"}, count=100)
    assert len(taken[0][1]) == 20
    killed = start_worker(redis_server.url, tmp_path, "killed")
    time.sleep(0.3)
    killed.send_signal(signal.SIGKILL)  # a second real worker killed outright as well
    killed.wait(10)
    survivor = start_worker(redis_server.url, tmp_path, "survivor")
    try:
        wait_until(lambda: stored(redis_server.url, ids) == 40)
        wait_until(lambda: client.xpending("medic:samples", "judges")["pending"] == 0)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(20)
        client.close()
    assert stored(redis_server.url, ids) == 40  # nothing lost, nothing twice


def test_gateway_answers_while_redis_is_down_and_recovers(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    fake = fake_upstream()
    gw = on_redis(gateway, fake, tmp_path, redis_server)
    redis_server.stop()
    started = time.monotonic()
    ids = ask(gw, 30)
    assert len(ids) == 30  # every request answered
    assert time.monotonic() - started < 10
    wait_until(lambda: http.metric(gw.metrics(), "medic_gateway_sample_queue_errors_total") > 0)
    assert http.metric(gw.metrics(), "medic_gateway_sample_buffer") == 30  # held, not dropped
    redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: bool(client.exists("medic:samples")) and client.xlen("medic:samples") == 30, timeout_s=20)
        queued = [orjson.loads(fields[b"s"])["request_id"] for _, fields in client.xrange("medic:samples")]
    finally:
        client.close()
    assert queued == ids  # every sample of the outage, in order
    assert http.metric(gw.metrics(), "medic_gateway_samples_enqueued_total") == 30
    assert http.metric(gw.metrics(), "medic_gateway_samples_dropped_total", reason="buffer_full") == 0


async def test_poison_samples_end_in_the_dead_letter_stream(redis_server: RedisServer) -> None:
    class Exploding:
        name, method, batch_size = "exploding", "exploding/1", 8

        def applies(self, sample: Sample) -> bool:
            return True

        async def close(self) -> None:
            pass

        async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
            if any("poison" in s.output() for s in samples):
                raise RuntimeError("judge bug")
            return [[Result(request_id=s.request_id, indicator="x", score=1.0, method=self.method, model=s.model)]
                    for s in samples]  # fmt: skip

    from prometheus_client import CollectorRegistry

    queue = RedisStreamQueue.from_url(redis_server.url, 1.0, stream="s", group="g", dead_letter_stream="s:dead",
                                      maxlen=1000, ttl_s=3600, max_attempts=2)  # fmt: skip
    store = RedisStore(queue.client, ttl_s=3600)
    good = [Sample(request_id=f"r{i}", model="m", response={"choices": [{"content": "fine"}]}) for i in range(5)]
    poison = Sample(request_id="bad", model="m", response={"choices": [{"content": "poison"}]})
    await queue.put([s.model_dump_json().encode() for s in [*good, poison]] + [b"{not json"])
    worker = Worker(queue, store, [Exploding()], JudgeMetrics(CollectorRegistry()),
                    WorkerSettings(retry_backoff_s=0.001, block_ms=100))  # fmt: skip
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):
            if await queue.client.xlen("s:dead") == 2 and len(await store.get("r4")) == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await run
    dead = await queue.client.xrange("s:dead")
    reasons = sorted(fields[b"reason"].decode() for _, fields in dead)
    assert reasons == ["judge_failed:exploding", "malformed"]
    assert [len(await store.get(f"r{i}")) for i in range(5)] == [1] * 5
    assert (await queue.depth()).pending == 0
    await queue.close()


def test_no_identifier_reaches_the_queue_the_store_or_the_logs(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(chat_completion("Jane Roe should call 617-555-0142 on 2024-01-09.")))
    gw = on_redis(gateway, fake, tmp_path, redis_server)
    ids = ask(gw, 1, NOTE)
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: client.exists("medic:samples") and client.xlen("medic:samples") == 1)
        ((_, fields),) = client.xrange("medic:samples")
        sample = json.loads(fields[b"s"])
    finally:
        client.close()
    assert sample["request_id"] == ids[0] and sample["privacy"] == "pseudonymised"
    dumped = json.dumps(sample)
    for identifier in ("Jane", "Roe", "483920", "03/14/1961", "2024-01-09", "617-555-0142"):
        assert identifier not in dumped
        assert identifier not in caplog.text
    request_text = sample["request"]["messages"][0]["content"]
    response_text = sample["response"]["choices"][0]["content"]
    name = next(token for token in request_text.split() if token.startswith("[NAME"))
    assert name.rstrip(".,") in response_text  # the same placeholder on both sides
    worker = start_worker(redis_server.url, tmp_path, "phi")
    try:
        wait_until(lambda: len(evaluations(gw, ids[0])) == 2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
    stored_text = json.dumps(evaluations(gw, ids[0]))
    for identifier in ("Jane", "Roe", "483920", "03/14/1961", "2024-01-09", "617-555-0142"):
        assert identifier not in stored_text


def test_evaluation_events_are_children_of_the_evaluated_request_span(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from gateway.tracing import configure
    from judges.events import EVENT, EvaluationEvents

    spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider, logger_provider = TracerProvider(), LoggerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(chat_completion(REFUSAL)))
    gw = gateway(sampled(fake, tmp_path), tracing=configure(provider=tracer_provider),
                 events=EvaluationEvents(logger_provider))  # fmt: skip
    ask(gw, 1, NOTE)
    wait_until(lambda: len(logs.get_finished_logs()) == 2)
    (span,) = spans.get_finished_spans()
    records = [entry.log_record for entry in logs.get_finished_logs()]
    assert {r.event_name for r in records} == {EVENT}
    assert all(r.trace_id == span.context.trace_id and r.span_id == span.context.span_id for r in records)
    by_name = {str((r.attributes or {})["gen_ai.evaluation.name"]): r.attributes or {} for r in records}
    assert by_name["refusal"]["gen_ai.evaluation.score.value"] == 1.0
    assert by_name["refusal"]["gen_ai.evaluation.score.label"] == "refused"
    assert "Jane" not in str(by_name) and "sorry" not in str(by_name)


def test_worker_serves_health_and_metrics_that_promtool_accepts(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    import shutil
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    worker = start_worker(redis_server.url, tmp_path, "metrics", port)
    gw = on_redis(gateway, fake_upstream(), tmp_path, redis_server)
    base = f"http://127.0.0.1:{port}"
    try:
        ids = ask(gw, 3)
        wait_until(lambda: stored(redis_server.url, ids) == 6)

        def scraped() -> str:
            try:
                response = http.request(base, "GET", "/metrics")
            except OSError:
                return ""
            return response.body.decode() if response.status == 200 else ""

        wait_until(lambda: http.metric(scraped(), "medic_judges_samples_processed_total") == 3)
        assert http.request(base, "GET", "/healthz").status == 200
        text = scraped()
        assert http.metric(text, "medic_judges_score_count", indicator="refusal") == 3
        wait_until(lambda: "medic_queue_lag" in scraped(), timeout_s=10)
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: scripts/test installs Debian's prometheus package"
        for body in (scraped(), gw.metrics()):
            check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
            assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) in (0, -signal.SIGTERM)


def serve(config: Path, redis_url: str, port: int) -> subprocess.Popen[bytes]:
    """``medic-gateway serve`` as a process of its own, sampling into Redis."""
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--redis-url", redis_url,
         "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def ready(url: str) -> bool:
    try:
        return http.request(url, "GET", "/readyz").status == 200
    except OSError:
        return False


def test_a_gateway_sent_sigterm_ships_its_buffer_or_says_how_much_it_could_not(
    fake_upstream: Callable[[], FakeUpstream], redis_server: RedisServer, tmp_path: Path
) -> None:
    fake = fake_upstream()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"upstreams: {{u: {{url: '{fake.url}'}}}}\nmodels: {{'*': {{routes: [{{upstream: u}}]}}}}\n"
        f"sampling: {{rate: 1.0, max_samples_per_s: 10000, drain_timeout_s: 2}}\n"
        f"results: {{sqlite_path: '{tmp_path / 'results.sqlite3'}'}}\nworker: {{port: 0}}\n"
    )
    client = redis.Redis.from_url(redis_server.url)
    for outage in (False, True):
        port = http.free_port()
        gw = serve(config, redis_server.url, port)
        try:
            wait_until(lambda url=f"http://127.0.0.1:{port}": ready(url))
            if outage:
                redis_server.stop()
            openai_client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
            for _ in range(20):
                openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}])
            gw.send_signal(signal.SIGTERM)  # at once: the samples are still in the gateway's buffer
            started = time.monotonic()
            assert gw.wait(20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down
            stopping = time.monotonic() - started
            log = gw.stderr.read().decode() if gw.stderr else ""
        finally:
            if gw.poll() is None:
                gw.kill()
        if not outage:
            assert client.xlen("medic:samples") == 20 and "did not take" not in log  # every sample shipped
        else:
            assert "stopping with 20 samples the queue did not take" in log  # said, with its number
            assert 2 <= stopping < 10  # the drain deadline, not forever
            redis_server.start()
    client.close()


async def test_a_slow_batch_keeps_its_claim_and_a_dead_workers_batch_is_taken_promptly(
    redis_server: RedisServer,
) -> None:
    from prometheus_client import CollectorRegistry

    class Slow:
        name, method, batch_size = "slow", "slow/1", 64
        calls = 0

        def applies(self, sample: Sample) -> bool:
            return True

        async def close(self) -> None:
            pass

        async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
            Slow.calls += len(samples)
            await asyncio.sleep(1.5)  # five times claim_idle_ms
            return [[Result(request_id=s.request_id, indicator="x", score=1.0, method=self.method, model=s.model)]
                    for s in samples]  # fmt: skip

    def open_queue() -> RedisStreamQueue:
        return RedisStreamQueue.from_url(redis_server.url, 1.0, stream="s", group="g", dead_letter_stream="s:dead",
                                         maxlen=1000, ttl_s=3600, max_attempts=3)  # fmt: skip

    queue = open_queue()
    store = RedisStore(queue.client, ttl_s=3600)
    settings = WorkerSettings(claim_idle_ms=300, reclaim_every_s=0.05, block_ms=50)
    registry = CollectorRegistry()  # the second worker's: what it reclaims
    workers = [Worker(queue, store, [Slow()], JudgeMetrics(CollectorRegistry()), settings, consumer="first"),
               Worker(queue, store, [Slow()], JudgeMetrics(registry), settings, consumer="second")]  # fmt: skip
    await queue.put([Sample(request_id=f"r{i}", model="m").model_dump_json().encode() for i in range(5)])
    stop = asyncio.Event()
    first = asyncio.create_task(workers[0].run(stop))
    await asyncio.sleep(0.2)  # the first worker holds the batch
    second = asyncio.create_task(workers[1].run(stop))
    for _ in range(100):
        if len(await store.get("r4")) == 1 and (await queue.depth()).pending == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(first, second)
    assert Slow.calls == 5  # judged once: the second worker never took the slow batch
    assert registry.get_sample_value("medic_judges_samples_reclaimed_total") == 0

    # A worker that dies holding a batch: its entries are taken after claim_idle_ms, not a minute later.
    await queue.put([Sample(request_id="orphan", model="m").model_dump_json().encode()])
    assert len(await queue.read("dead-worker", 10, 50)) == 1  # read, never acknowledged nor renewed
    stop = asyncio.Event()
    started = time.monotonic()
    survivor = asyncio.create_task(workers[1].run(stop))
    for _ in range(200):
        if len(await store.get("orphan")) == 1:
            break
        await asyncio.sleep(0.05)
    taken_after = time.monotonic() - started
    stop.set()
    await survivor
    assert len(await store.get("orphan")) == 1 and taken_after < 1.5 + 1.0  # claim_idle_ms + the slow judge + slack
    await queue.close()


async def test_a_full_stream_gives_up_its_oldest_samples_and_counts_the_unread_ones(redis_server: RedisServer) -> None:
    queue = RedisStreamQueue.from_url(redis_server.url, 1.0, stream="s", group="g", dead_letter_stream="s:dead",
                                      maxlen=10, ttl_s=3600, max_attempts=3)  # fmt: skip
    payloads = [Sample(request_id=f"r{i}", model="m").model_dump_json().encode() for i in range(20)]
    assert await queue.put(payloads[:8]) == 0  # under the cap
    read = await queue.read("w", 5, 50)  # r0-r4 read by a worker
    await queue.ack([d.id for d in read[:3]])
    assert await queue.put(payloads[8:16]) == 1  # 16 entries, cap 10: r0-r5 go, and of them only r5 was unread
    assert await queue.put(payloads[16:20]) == 4  # r6-r9 go, none of them read
    left = [Sample.model_validate_json(fields[b"s"]).request_id for _, fields in await queue.client.xrange("s")]
    assert left == [f"r{i}" for i in range(10, 20)]  # the newest kept, in order
    await queue.close()


async def test_a_judge_that_hangs_fails_after_its_timeout_and_its_samples_are_dead_lettered(
    redis_server: RedisServer,
) -> None:
    from prometheus_client import CollectorRegistry

    class Hangs:
        name, method, batch_size = "hangs", "hangs/1", 8

        def applies(self, sample: Sample) -> bool:
            return True

        async def close(self) -> None:
            pass

        async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
            await asyncio.sleep(3600)
            return []

    queue = RedisStreamQueue.from_url(redis_server.url, 1.0, stream="s", group="g", dead_letter_stream="s:dead",
                                      maxlen=1000, ttl_s=3600, max_attempts=2)  # fmt: skip
    store = RedisStore(queue.client, ttl_s=3600)
    await queue.put([Sample(request_id="r1", model="m").model_dump_json().encode()])
    registry = CollectorRegistry()
    settings = WorkerSettings(judge_timeout_s=0.2, retry_backoff_s=0.001, block_ms=50, max_attempts=2)
    worker = Worker(queue, store, [Hangs()], JudgeMetrics(registry), settings)
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(100):
            if await queue.client.xlen("s:dead") == 1:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await run
    ((_, fields),) = await queue.client.xrange("s:dead")
    assert fields[b"reason"] == b"judge_failed:hangs"
    assert registry.get_sample_value("medic_judges_failures_total", {"judge": "hangs"}) == 2
    assert (await queue.depth()).pending == 0
    await queue.close()
