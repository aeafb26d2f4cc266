"""Results rules: a rolling indicator of the judges' results changes how the gateway treats a model."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from config import GatewayConfig, ModelConfig, PoliciesConfig, Route, UpstreamConfig
from pipeline.sample import Result
from pipeline.store import SQLiteStore
from policies.audit import AuditLog, PolicyMetrics
from policies.checks.registry import all_checks
from policies.engine import PolicyEngine
from policies.monitor import ResultsMonitor
from policies.pack import load
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, chat_completion

PACK = """name: drift
rules:
  - id: consistency-drift
    stages: [results]
    action: {action}
    shadow: {shadow}
    when: {{indicator: fidelity_consistency, method: cef, statistic: mean, below: 0.8, window_s: 900, min_samples: 5}}
"""


def engine(tmp_path: Path, action: str = "fallback", shadow: bool = False) -> PolicyEngine:
    path = tmp_path / "drift.yaml"
    path.write_text(PACK.format(action=action, shadow=str(shadow).lower()))
    from prometheus_client import CollectorRegistry

    return PolicyEngine([load(str(path), frozenset(all_checks()))], all_checks(), AuditLog(tmp_path / "audit.jsonl"),
                        PolicyMetrics(CollectorRegistry()))  # fmt: skip


def scores(model: str, values: list[float], method: str = "cef-lite/3") -> list[Result]:
    now = time.time()
    return [Result(request_id=f"{model}-{i}", indicator="fidelity_consistency", score=v, method=method, model=model,
                   created_at=now - i) for i, v in enumerate(values)]  # fmt: skip


async def test_a_model_enters_and_leaves_the_state_with_its_rolling_mean(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db", 3600)
    policies = engine(tmp_path)
    monitor = ResultsMonitor(policies, store, ["clinical", "other"], 30)
    await store.put(scores("clinical", [0.5] * 6) + scores("other", [0.95] * 6))
    await monitor.evaluate(time.time())
    assert policies.model_actions("clinical") == {"fallback"} and policies.model_actions("other") == set()
    await store.put(scores("clinical", [1.0] * 30))  # the newer, better scores outweigh the old ones
    await monitor.evaluate(time.time())
    assert policies.model_actions("clinical") == set()
    transitions = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(t["model"], t["transition"]) for t in transitions] == [("clinical", "entered"), ("clinical", "left")]
    assert transitions[0]["statistic"] == 0.5 and transitions[0]["scores"] == 6
    await store.close()


async def test_too_few_scores_or_another_method_decide_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db", 3600)
    policies = engine(tmp_path)
    await store.put(scores("clinical", [0.1] * 4) + scores("clinical", [0.1] * 10, method="other-judge/1"))
    await ResultsMonitor(policies, store, ["clinical"], 30).evaluate(time.time())
    assert policies.model_actions("clinical") == set()
    await store.close()


async def test_a_shadowed_results_rule_records_its_transition_and_acts_on_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "r.db", 3600)
    policies = engine(tmp_path, shadow=True)
    await store.put(scores("clinical", [0.2] * 10))
    await ResultsMonitor(policies, store, ["clinical"], 30).evaluate(time.time())
    assert policies.model_actions("clinical") == set()
    (entry,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert (entry["mode"], entry["transition"]) == ("shadow", "entered")
    await store.close()


async def put(path: Path, results: list[Result]) -> None:
    """Results written by another process (a worker) into the store the gateway reads."""
    store = SQLiteStore(path, 3600)
    await store.put(results)
    await store.close()


def test_a_degraded_model_goes_to_its_fallback_through_the_gateway(
    fake_upstream: Callable[[], FakeUpstream], gateway: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    primary, fallback = fake_upstream(), fake_upstream()
    primary.script("/v1/chat/completions", Json(chat_completion("from primary")))
    fallback.script("/v1/chat/completions", Json(chat_completion("from fallback")))
    pack = tmp_path / "drift.yaml"
    pack.write_text(PACK.format(action="fallback", shadow="false"))
    config = GatewayConfig(
        upstreams={"a": UpstreamConfig(url=primary.url), "b": UpstreamConfig(url=fallback.url)},
        models={"clinical": ModelConfig(routes=[Route(upstream="a"), Route(upstream="b")])},
        policies=PoliciesConfig(packs=[str(pack)], audit_path=str(tmp_path / "audit.jsonl"), monitor_every_s=0.2),
    )
    gw = gateway(config)
    body = json.dumps({"model": "clinical", "messages": [{"role": "user", "content": "hi"}]}).encode()

    def ask() -> str:
        reply = http.request(gw.url, "POST", "/v1/chat/completions", body)
        return str(reply.json()["choices"][0]["message"]["content"])

    assert ask() == "from primary"
    asyncio.run(put(Path(gw.app.config.results.sqlite_path), scores("clinical", [0.3] * 8)))
    http.eventually(lambda: ask() == "from fallback", timeout_s=5)
    assert http.metric(gw.metrics(), "medic_policy_model_state", model="clinical", state="fallback") == 1
