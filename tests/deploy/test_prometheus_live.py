"""A real Prometheus, loaded with deploy/prometheus/alerts.yml, scraping a real gateway and a real judge worker.

fake upstream <- gateway (samples every exchange into Redis) -> Redis -> `medic-gateway worker` subprocess
                     ^ /metrics                                                 ^ /metrics
                     +------------- prometheus (1 s scrapes, 1 s rule evaluation) -+

Clinical traffic that the model refuses gives the worker refusal scores of 1; a second model whose upstream
answers 500 drives MedicUpstreamErrorRateHigh into its pending state (it needs 5 minutes to fire).
promtool's Debian package (prometheus) provides the prometheus binary; the test fails when it is missing.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from config import GatewayConfig, QueueConfig, ResultsConfig, SamplingConfig, WorkerConfig, single_upstream
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstream import FakeUpstream, Json, Recorded, Spec, chat_completion, error

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
REFUSAL = "I'm sorry, but I can't help with that request."
NEVER = "0001-01-01T00:00:00Z"  # Prometheus's lastEvaluation of a rule never evaluated
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


def poll(check: Callable[[], T | None], what: str | Callable[[], str], timeout_s: float = 30.0,
         logs: tuple[Path, ...] = ()) -> T:  # fmt: skip
    """``check()`` until it returns something other than None or False; fail saying ``what`` after the timeout,
    with the end of each log."""
    deadline = time.monotonic() + timeout_s
    while (result := check()) is None or result is False:
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            waited = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout_s} s waiting for {waited}{tails}")
        time.sleep(0.2)
    return result


class Prometheus:
    """The Debian ``prometheus`` binary on a free loopback port, its storage and configuration in ``directory``."""

    def __init__(self, directory: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: install the Debian package prometheus")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]} for job, target in targets.items()
            ],
        }
        (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        poll(lambda: self.process.poll() is None and reachable(f"{self.url}/-/ready"), "prometheus", 20, (self.log,))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        body = get_json(f"{self.url}/api/v1/{path}{query}")
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])


@dataclass
class WorkerProcess:
    address: str  # host:port of its /metrics
    log: Path


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[WorkerProcess]:
    """``medic-gateway worker`` on the Redis stream, serving /metrics on a free port."""
    port = free_port()
    config = tmp_path / "worker.yaml"
    config.write_text(
        "upstreams: {u: {url: 'http://127.0.0.1:9/v1'}}\nmodels: {'*': {routes: [{upstream: u}]}}\n"
        "queue: {claim_idle_ms: 300}\n"
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--config", str(config), "--redis-url", redis_server.url,
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        poll(lambda: process.poll() is None and reachable(f"http://127.0.0.1:{port}/metrics"), "the worker", 30, (log,))
        yield WorkerProcess(f"127.0.0.1:{port}", log)
    finally:
        process.terminate()
        process.wait(20)


def answer(recorded: Recorded) -> Spec:
    """The upstream: model "failing" answers 500; every other model refuses."""
    if isinstance(recorded.json, dict) and recorded.json.get("model") == "failing":
        return error(500, "upstream failure", type_="server_error")
    return Json(chat_completion(REFUSAL))


def sampling_gateway(fake: FakeUpstream, tmp_path: Path) -> GatewayConfig:
    """Every exchange sampled, no retries (a 500 is answered at once)."""
    config = single_upstream(fake.url)
    upstreams = {name: u.model_copy(update={"retries": 0}) for name, u in config.upstreams.items()}
    return config.model_copy(update={
        "upstreams": upstreams,
        "sampling": SamplingConfig(rate=1.0, max_samples_per_s=10_000),
        "results": ResultsConfig(sqlite_path=str(tmp_path / "results.sqlite3")),
        "queue": QueueConfig(claim_idle_ms=300),
        "worker": WorkerConfig(port=0),
    })  # fmt: skip


def send(gw: GatewayServer, model: str, count: int) -> list[int]:
    body = {"model": model, "messages": [{"role": "user", "content": "What is the maximum daily dose of paracetamol?"}]}
    return [http.post_json(gw.url, "/v1/chat/completions", body).status for _ in range(count)]


def value(prometheus: Prometheus, expr: str) -> float | None:
    result = prometheus.query(expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def error_alerts(prometheus: Prometheus) -> list[dict[str, Any]]:
    return [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] == "MedicUpstreamErrorRateHigh"]


def test_prometheus_evaluates_the_rules_on_live_gateway_and_worker_metrics(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    worker: WorkerProcess,
    tmp_path: Path,
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", answer)
    gw = gateway(sampling_gateway(fake, tmp_path), redis_url=redis_server.url)
    targets = {"medic-gateway": f"127.0.0.1:{gw.port}", "medic-worker": worker.address}
    prometheus = Prometheus(tmp_path / "prometheus", targets)
    logs = (prometheus.log, worker.log)
    try:
        poll(lambda: value(prometheus, "sum(up)") == 2.0, "both targets up", 20, logs)

        seen: dict[str, Any] = {}

        def traffic_seen() -> list[dict[str, Any]] | None:
            assert send(gw, "clinical", 4) == [200] * 4
            assert all(status >= 500 for status in send(gw, "failing", 4))
            seen["mean"] = value(prometheus, 'indicator_model_method:medic_judges_score:mean15m{indicator="refusal", '
                                             'model="clinical", method="refusal-rules/1"}')  # fmt: skip
            seen["alerts"] = error_alerts(prometheus)
            seen["scores"] = value(prometheus, 'sum(medic_judges_score_count{indicator="refusal"})')
            seen["requests"] = value(prometheus, "sum(medic_gateway_requests_total)")
            ready = seen["mean"] is not None and not math.isnan(seen["mean"]) and seen["alerts"]
            return seen["alerts"] if ready else None

        alerts = poll(traffic_seen, lambda: f"the refusal mean and the pending error alert; last seen {seen}", 45,
                     logs)  # fmt: skip
        check_live_scores(prometheus)
        check_error_alert(prometheus, alerts)
        check_rule_groups(prometheus)
    finally:
        prometheus.stop()


def check_live_scores(prometheus: Prometheus) -> None:
    """Refusal scores scraped from the worker, every one a refusal (1): count, sum and the recorded mean."""
    (count,) = prometheus.query('medic_judges_score_count{indicator="refusal", model="clinical"}')
    assert count["metric"]["job"] == "medic-worker" and count["metric"]["method"] == "refusal-rules/1"
    assert float(count["value"][1]) > 0
    assert abs(float(count["value"][0]) - time.time()) < 10  # a live sample, not an old one
    selector = '{indicator="refusal", model="clinical"}'
    assert value(prometheus, f"medic_judges_score_sum{selector} - medic_judges_score_count{selector}") == 0.0
    recorded = prometheus.query('indicator_model_method:medic_judges_score:mean15m{indicator="refusal"}')
    assert [(r["metric"]["model"], float(r["value"][1])) for r in recorded] == [("clinical", 1.0)]
    assert value(prometheus, 'indicator_model_method:medic_judges_score_count:increase15m{indicator="refusal"}')
    # the gateway counts the same model under the same label name
    assert value(prometheus, 'sum(medic_gateway_requests_total{model="clinical", status_code="200"})')


def check_error_alert(prometheus: Prometheus, alerts: list[dict[str, Any]]) -> None:
    """Pending (its `for` is 5 min), for the failing model only, with its labels and annotations."""
    (alert,) = alerts
    assert alert["state"] == "pending" and alert["activeAt"]
    assert alert["labels"] == {"alertname": "MedicUpstreamErrorRateHigh", "model": "failing", "severity": "page"}
    assert float(alert["value"]) == 1.0  # every request for "failing" ended in a 5xx
    annotations = alert["annotations"]
    assert annotations["summary"] == "100% of the requests for failing end in a 5xx"
    assert annotations["runbook_url"] == "docs/runbooks.md#medicupstreamerrorratehigh"
    assert annotations["evaluations"] == "/v1/evaluations?model=failing&limit=20"
    firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == [], "nothing in this test may fire"


def check_rule_groups(prometheus: Prometheus) -> None:
    """Every rule of alerts.yml loaded and evaluated without error."""
    expected = yaml.safe_load(RULES.read_text())["groups"]
    groups = {g["name"]: g for g in prometheus.api("rules")["groups"]}
    assert sorted(groups) == sorted(g["name"] for g in expected)
    for group in expected:
        loaded = groups[group["name"]]
        assert loaded["file"] == str(RULES) and loaded["lastEvaluation"] != NEVER
        names = [r["name"] for r in loaded["rules"]]
        assert names == [r.get("alert") or r.get("record") for r in group["rules"]]
        for rule in loaded["rules"]:
            assert rule["health"] == "ok", rule
            assert rule["lastEvaluation"] != NEVER, rule
