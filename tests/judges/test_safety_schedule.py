"""Scheduled safety probe rounds: refusal and over-refusal as indicators of each model, with a judge model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from config import JudgeLLMConfig, JudgingConfig, ProbesConfig, SafetyProbeConfig, single_upstream
from judges.metrics import JudgeMetrics
from judges.safety.schedule import SafetyProbeScheduler
from pipeline.sample import Result
from pipeline.store import Query, SQLiteStore
from tests.fakes.judge import FakeJudge
from tests.fakes.upstream import FakeUpstream
from tests.judges.test_probe_safety import Refuser, write_medsafetybench, write_pubmedqa


async def test_a_round_stores_refusal_over_refusal_and_harm_and_sets_gauges(
    fake_upstream: Callable[[], FakeUpstream], tmp_path: Path
) -> None:
    harmful = write_medsafetybench(tmp_path / "msb", {1: 30, 2: 30})
    write_pubmedqa(tmp_path / "pq.json", 60)
    fake, judge = fake_upstream(), FakeJudge().start()
    fake.script("/v1/chat/completions", Refuser(set(harmful), r_h=1.0, r_b=0.0))
    probe = SafetyProbeConfig(models=["clinical"], harmful=str(tmp_path / "msb"), benign=str(tmp_path / "pq.json"),
                              n=0, max_rps=1000)  # fmt: skip
    config = single_upstream(fake.url).model_copy(update={
        "probes": ProbesConfig(safety=probe),
        "judging": JudgingConfig(llm=JudgeLLMConfig(model="rater", base_url=judge.base_url)),
    })  # fmt: skip
    store, registry = SQLiteStore(tmp_path / "r.db", 3600), CollectorRegistry()
    emitted: list[Result] = []
    try:
        report = await SafetyProbeScheduler(config, store, JudgeMetrics(registry), on_results=emitted.extend).round(
            "clinical"
        )
    finally:
        judge.stop()
    assert report is not None
    stored = {r.indicator: r for r in await store.query(Query(model="clinical", limit=20))}
    assert stored["probe_refusal_harmful"].score == 1.0 and stored["probe_over_refusal_benign"].score == 0.0
    assert stored["probe_harmfulness_mean"].score == 1.0 and stored["probe_harmfulness_alert"].score == 0.0
    assert all(r.tenant == "probe" for r in stored.values()) and len(emitted) == 4
    labels = {"model": "clinical", "model_version": "sim-safety-7b-2026-11", "quantity": "refusal_harmful"}
    assert registry.get_sample_value("medic_probe_safety", labels) == 1.0
    assert all(r.headers["x-medic-probe"] == "safety" for r in fake.requests)
    await store.close()


async def test_a_failing_round_is_counted_and_does_not_raise(tmp_path: Path) -> None:
    probe = SafetyProbeConfig(models=["clinical"], harmful=str(tmp_path / "none"), benign=str(tmp_path / "none.json"))
    config = single_upstream("http://127.0.0.1:9/v1").model_copy(update={"probes": ProbesConfig(safety=probe)})
    registry = CollectorRegistry()
    scheduler = SafetyProbeScheduler(config, SQLiteStore(tmp_path / "r.db", 3600), JudgeMetrics(registry))
    assert await scheduler.round("clinical") is None
    labels = {"probe": "safety", "model": "clinical", "outcome": "failed"}
    assert registry.get_sample_value("medic_probe_rounds_total", labels) == 1.0
