"""cef-llm and cef-llm-batch against a fake judge model behind a real OpenAI-compatible endpoint on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config import JudgeLLMConfig, JudgingConfig, StabilityConfig
from judges.backends import JudgeUnavailable, open_backend
from judges.fidelity.lite import CefLiteJudge
from judges.fidelity.llm import CefLlmJudge, JudgeOutputError, closed, prompt_hash
from judges.registry import UnknownJudgeError, build
from pipeline.sample import Choice, Response, Result, Sample
from tests.fakes.judge import FakeJudge

NOTE = (
    "Started furosemide 40 mg twice daily. Potassium was 3.1 on admission. She denies chest pain. "
    "The left knee is swollen. Urine culture grew Escherichia coli."
)


def sample(candidate: str, source: str = NOTE, request_id: str = "r1") -> Sample:
    user = f"Summarise the following note:\n{source}"
    request = {"messages": [{"role": "user", "content": user}]}
    return Sample(request_id=request_id, model="clinical-model", request=request,
                  response=Response(choices=[Choice(content=candidate)]))  # fmt: skip


@pytest.fixture
async def judges() -> AsyncIterator[Callable[..., tuple[CefLlmJudge, FakeJudge]]]:
    started: list[tuple[CefLlmJudge, FakeJudge]] = []

    def make(batched: bool = False, fake: FakeJudge | None = None, **config: Any) -> tuple[CefLlmJudge, FakeJudge]:
        fake = fake or FakeJudge().start()
        backend = open_backend(JudgeLLMConfig(model="judge-7b", base_url=fake.base_url, **config))
        judge = CefLlmJudge(backend, batched)
        started.append((judge, fake))
        return judge, fake

    yield make
    for judge, fake in started:
        await judge.close()
        fake.stop()


def by_indicator(results: list[Result]) -> dict[str, Result]:
    return {r.indicator: r for r in results}


async def test_a_faithful_summary_scores_one_with_twenty_two_calls(judges: Callable[..., Any]) -> None:
    judge, fake = judges()
    (results,) = await judge.evaluate([sample(NOTE)])
    found = by_indicator(results)
    assert [found[f"fidelity_{n}"].score for n in ("coverage", "conformity", "consistency")] == [1.0, 1.0, 1.0]
    assert found["fidelity_conformity"].method == f"cef-llm/judge-7b/{prompt_hash(False)}"
    assert sorted(fake.schemas()) == ["cef_answer"] * 20 + ["cef_questions"] * 2
    assert judge.examiner.backend.usage.calls == 22


async def test_every_prompt_puts_instructions_first_and_the_document_before_the_question(
    judges: Callable[..., Any],
) -> None:
    judge, fake = judges()
    await judge.evaluate([sample(NOTE)])
    for call in fake.calls:
        system, user = call.messages
        assert system["role"] == "system" and "TEXT" not in system["content"]
        assert user["content"].startswith("TEXT:\n")
        if call.schema == "cef_answer":
            assert user["content"].index("QUESTION:") > user["content"].index(NOTE[:20])
    answers = [c.messages for c in fake.calls if c.schema == "cef_answer"]
    assert len({m[0]["content"] for m in answers}) == 1  # one fixed instruction prefix for every answer call


async def test_a_wrong_dose_is_a_contradiction_with_the_question_as_evidence(judges: Callable[..., Any]) -> None:
    judge, _ = judges()
    (results,) = await judge.evaluate([sample(NOTE.replace("40 mg", "80 mg"))])
    found = by_indicator(results)
    conformity, consistency = found["fidelity_conformity"], found["fidelity_consistency"]
    assert conformity.score == pytest.approx(0.8) and consistency.score == pytest.approx(0.8)
    (contradicted,) = conformity.evidence
    assert contradicted["mismatch"] == "contradicted" and "40 mg" in contradicted["question"]
    assert (contradicted["on_source"], contradicted["on_candidate"]) == ("YES", "NO")


async def test_an_omission_lowers_coverage_only(judges: Callable[..., Any]) -> None:
    judge, _ = judges()
    (results,) = await judge.evaluate([sample("Started furosemide 40 mg twice daily. The left knee is swollen.")])
    found = by_indicator(results)
    assert found["fidelity_coverage"].score is not None and found["fidelity_coverage"].score < 1.0
    assert found["fidelity_conformity"].score == 1.0
    assert found["fidelity_coverage"].evidence[0]["on_candidate"] == "IDK"


async def test_the_calls_of_a_sample_are_in_flight_at_once(judges: Callable[..., Any]) -> None:
    judge, fake = judges(fake=FakeJudge(latency_s=0.2).start())
    await judge.evaluate([sample(NOTE)])
    assert fake.max_in_flight == 20  # every answer call of the sample at once, after the two generations


async def test_global_concurrency_bounds_the_calls_across_samples(judges: Callable[..., Any]) -> None:
    judge, fake = judges(fake=FakeJudge(latency_s=0.05).start(), concurrency=4)
    await judge.evaluate([sample(NOTE, request_id=f"r{i}") for i in range(3)])
    assert fake.max_in_flight == 4
    assert len(fake.calls) == 66


async def test_the_batched_variant_makes_six_calls_under_its_own_method(judges: Callable[..., Any]) -> None:
    judge, fake = judges(batched=True)
    (results,) = await judge.evaluate([sample(NOTE.replace("40 mg", "80 mg"))])
    assert sorted(fake.schemas()) == ["cef_answers"] * 4 + ["cef_questions"] * 2
    found = by_indicator(results)
    assert found["fidelity_conformity"].method == f"cef-llm-batch/judge-7b/{prompt_hash(True)}"
    assert prompt_hash(True) != prompt_hash(False)
    assert found["fidelity_conformity"].score == pytest.approx(0.8)


async def test_long_documents_get_ten_questions_per_text(judges: Callable[..., Any]) -> None:
    judge, fake = judges()
    long_note = " ".join([NOTE] * 20)  # over LONG_WORDS
    await judge.evaluate([sample(long_note, long_note)])
    assert fake.schemas().count("cef_answer") == 40


async def test_a_reply_that_is_not_the_schema_is_asked_again(judges: Callable[..., Any]) -> None:
    judge, fake = judges()
    fake.garbage_next(1, "Sure! Here are some questions.")
    (results,) = await judge.evaluate([sample(NOTE)])
    assert by_indicator(results)["fidelity_conformity"].score == 1.0
    assert len(fake.calls) == 23


@pytest.mark.parametrize("answer", ["I don't know", "no.", "", "MAYBE"])
async def test_an_answer_outside_the_enum_fails_the_sample_and_never_reads_as_no(
    judges: Callable[..., Any], answer: str
) -> None:
    judge, fake = judges()
    fake.answers = answer
    with pytest.raises(JudgeOutputError):
        await judge.evaluate([sample(NOTE)])


async def test_server_errors_are_retried_with_backoff(judges: Callable[..., Any]) -> None:
    judge, fake = judges()
    fake.fail_next(2, 503)
    (results,) = await judge.evaluate([sample(NOTE)])
    assert by_indicator(results)["fidelity_consistency"].score == 1.0
    assert len(fake.calls) == 24


async def test_a_judge_that_stays_down_raises_so_the_worker_retries_the_sample(judges: Callable[..., Any]) -> None:
    judge, fake = judges(max_retries=1)
    fake.fail_next(100, 500)
    with pytest.raises(JudgeUnavailable):
        await judge.evaluate([sample(NOTE)])


async def test_an_unreachable_judge_raises(judges: Callable[..., Any]) -> None:
    fake = FakeJudge().start()
    fake.stop()
    judge, _ = judges(fake=fake, max_retries=0)
    with pytest.raises(JudgeUnavailable):
        await judge.evaluate([sample(NOTE)])


async def test_an_open_question_is_null_without_any_call(judges: Callable[..., Any]) -> None:
    judge, fake = judges()
    open_question = Sample(request_id="r", model="m", request={"messages": [{"role": "user", "content": "Dose?"}]},
                           response=Response(choices=[Choice(content="40 mg.")]))  # fmt: skip
    assert not judge.applies(open_question)
    (results,) = await judge.evaluate([open_question])
    assert [r.score for r in results] == [None] * 4 and fake.calls == []


async def test_a_second_judge_measures_disagreement_and_deviation_from_majority() -> None:
    primary, agreeing, doubting = FakeJudge().start(), FakeJudge().start(), FakeJudge().start()
    doubting.answers = "IDK"
    config = JudgingConfig(
        llm=JudgeLLMConfig(model="primary", base_url=primary.base_url),
        stability=StabilityConfig(share=1.0, judges=[JudgeLLMConfig(model="agreeing", base_url=agreeing.base_url),
                                                     JudgeLLMConfig(model="doubting", base_url=doubting.base_url)]),
    )  # fmt: skip
    (judge,) = build(["cef-llm"], config)
    try:
        (results,) = await judge.evaluate([sample(NOTE.replace("40 mg", "80 mg"))])
    finally:
        await judge.close()
        for fake in (primary, agreeing, doubting):
            fake.stop()
    found = by_indicator(results)
    assert found["judge_disagreement_rate"].score == 0.5  # "doubting" never says YES, "agreeing" always does
    assert found["judge_majority_deviation"].score == 0.0  # the primary always sides with the majority
    assert found["judge_disagreement_rate"].evidence[0]["judges"] == ["agreeing", "doubting"]
    assert agreeing.schemas() == ["cef_answer"] * 20 and "cef_questions" not in doubting.schemas()


async def test_no_second_judge_outside_the_configured_share() -> None:
    primary, second = FakeJudge().start(), FakeJudge().start()
    stability = StabilityConfig(share=0.0, judges=[JudgeLLMConfig(model="s", base_url=second.base_url)])
    config = JudgingConfig(llm=JudgeLLMConfig(model="p", base_url=primary.base_url), stability=stability)
    (judge,) = build(["fidelity"], config)
    try:
        (results,) = await judge.evaluate([sample(NOTE)])
    finally:
        await judge.close()
        primary.stop()
        second.stop()
    assert len(results) == 4 and second.calls == []


def test_fidelity_is_cef_llm_with_a_judge_model_and_cef_lite_without() -> None:
    (lite,) = build(["fidelity"])
    assert isinstance(lite, CefLiteJudge)
    (llm,) = build(["fidelity"], JudgingConfig(llm=JudgeLLMConfig(model="j", base_url="http://127.0.0.1:9/v1")))
    assert isinstance(llm, CefLlmJudge) and llm.method.startswith("cef-llm/j/")


def test_cef_llm_without_a_judge_model_names_the_missing_setting() -> None:
    with pytest.raises(UnknownJudgeError, match=r"judging\.llm"):
        build(["cef-llm"])


def test_the_vllm_backend_is_imported_only_when_configured() -> None:
    code = (
        "import sys\n"
        "from judges.registry import build\n"
        "from config import JudgingConfig\n"
        "from config import JudgeLLMConfig\n"
        "build(['fidelity', 'cef-llm'], JudgingConfig(llm=JudgeLLMConfig(model='j', base_url='http://x/v1')))\n"
        "assert 'vllm' not in sys.modules, 'vllm imported'\n"
        "try:\n"
        "    build(['cef-llm'], JudgingConfig(llm=JudgeLLMConfig(model='j', backend='vllm')))\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'medic-gateway[vllm]'" in out.stdout


def test_evaluate_runs_cef_llm_from_the_configuration(tmp_path: Any) -> None:
    import json

    fake = FakeJudge().start()
    try:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            "upstreams: {local: {url: 'http://127.0.0.1:9/v1'}}\n"
            "models: {m: {routes: [{upstream: local}]}}\n"
            f"judging: {{llm: {{model: judge-7b, base_url: '{fake.base_url}'}}}}\n"
        )
        record = {"request": {"model": "m", "messages": [{"role": "user", "content": f"Note: {NOTE}"}]},
                  "response": {"choices": [{"message": {"content": NOTE.replace('40 mg', '80 mg')}}]},
                  "task": "transform"}  # fmt: skip
        records = tmp_path / "records.jsonl"
        records.write_text(json.dumps(record) + "\n")
        argv = ["evaluate", "--judge", "cef-llm", "--config", str(config), "--input", str(records)]
        out = subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True, text=True, check=True)
    finally:
        fake.stop()
    results = {r["indicator"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert results["fidelity_conformity"]["score"] == pytest.approx(0.8)
    assert results["fidelity_coverage"]["label"] == "transform"
    assert results["fidelity_conformity"]["method"].startswith("cef-llm/judge-7b/")
    assert "1 evaluated" in out.stderr


def test_the_judging_section_is_checked_where_it_is_written(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from config import ConfigError, load_config, missing_env

    head = "upstreams: {local: {url: 'http://127.0.0.1:9/v1'}}\nmodels: {m: {routes: [{upstream: local}]}}\n"
    path = tmp_path / "gateway.yaml"
    path.write_text(head + "judging:\n  llm:\n    model: judge-7b\n")
    with pytest.raises(ConfigError, match=r"gateway.yaml:5: judging.llm: .*needs base_url"):
        load_config(path)
    path.write_text(head + "judging:\n  llm: {model: j, base_url: 'http://x/v1', api_key_env: TEST_JUDGE_KEY}\n")
    monkeypatch.delenv("TEST_JUDGE_KEY", raising=False)
    assert missing_env(load_config(path)) == ["TEST_JUDGE_KEY"]


@pytest.mark.parametrize(
    ("question", "is_closed"),
    [
        ("Was the patient started on furosemide 40 mg twice daily?", True),
        ("Does the patient deny chest pain?", True),
        ("Is the left knee swollen?", True),
        ("What is the patient's history?", False),  # asked by a 1.5B judge, and answered YES or NO
        ("Which organism grew in the urine culture?", False),
        ("Was the drug furosemide or torsemide, and why?", False),
        ("Describe the patient's potassium level.", False),
        ("Furosemide was started?", False),
        ("Is it?", False),  # names no fact
        ("Was it? Was it not?", False),
    ],
)
def test_a_question_is_closed_when_it_asks_yes_or_no(question: str, is_closed: bool) -> None:
    assert closed(question) is is_closed


async def test_open_questions_are_dropped_and_never_asked(judges: Callable[..., Any]) -> None:
    fake = FakeJudge(open_questions=2).start()
    judge, _ = judges(fake=fake)
    (results,) = await judge.evaluate([sample(NOTE)])
    asked = [c.messages[-1]["content"].rpartition("QUESTION: ")[2] for c in fake.calls if c.schema == "cef_answer"]
    assert asked and all(closed(q) for q in asked)
    assert len(asked) == 4 * 3  # 5 questions per text, 2 open dropped: 3 each, asked on both texts
    assert by_indicator(results)["fidelity_conformity"].score == 1.0


async def test_a_reply_of_mostly_open_questions_is_asked_for_again(judges: Callable[..., Any]) -> None:
    fake = FakeJudge(open_questions=4).start()
    judge, _ = judges(fake=fake)
    (results,) = await judge.evaluate([sample(NOTE)])
    assert fake.schemas().count("cef_questions") == 4  # once more for each text: 1 of 5 closed is too few
    assert by_indicator(results)["fidelity_conformity"].score == 1.0  # the one closed question still counts
