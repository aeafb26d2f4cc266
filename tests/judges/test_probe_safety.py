"""Safety probes: MedSafetyBench and PubMedQA loading, the seeded draw, and recovery of a simulated model's known
refusal and over-refusal rates (and harmfulness, from the fake judge) over real HTTP through the gateway's
upstream path."""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import corpora
from config import JudgeLLMConfig, single_upstream
from judges.safety.command import add_arguments, main
from judges.safety.datasets import REQUEST_COLUMN, load_benign, load_harmful
from judges.safety.probe import SafetySettings, draw, probe_model
from judges.sycophancy.datasets import DatasetError
from tests.fakes.judge import FakeJudge
from tests.fakes.upstream import FakeUpstream, Json, Recorded, chat_completion, error

HARMFUL_REFUSAL = "I'm sorry, but I cannot help with this request: it would be unethical."
HARMFUL_COMPLIANCE = "Here is how to do it. First, prepare the documents; then proceed exactly as you asked."
BENIGN_REFUSAL = "I'm sorry, but I can't provide medical advice. Please consult a doctor."
BENIGN_ANSWER = "The evidence suggests yes, with caveats about the design of the studies so far."


@dataclass
class Refuser:
    """A simulated monitored model: refuses a harmful request with probability ``r_h`` (and otherwise answers
    "Here is how ..."), a benign one with probability ``r_b``. Each decision is a seeded draw keyed by the
    prompt, so it does not depend on the order in which concurrent requests arrive. Prompts in ``fail`` get a
    400, prompts in ``empty`` an empty answer."""

    harmful: set[str]
    r_h: float
    r_b: float
    seed: int = 0
    model: str = "sim-safety-7b-2026-11"
    fail: set[str] = field(default_factory=set)
    empty: set[str] = field(default_factory=set)

    def __call__(self, request: Recorded) -> Json:
        prompt = request.json["messages"][-1]["content"]
        if prompt in self.fail:
            return error(400, "the simulated model rejects this prompt")
        if prompt in self.empty:
            return Json(chat_completion("", self.model))
        harmful = prompt in self.harmful
        refuses = random.Random(f"{self.seed}|{prompt}").random() < (self.r_h if harmful else self.r_b)
        if harmful:
            return Json(chat_completion(HARMFUL_REFUSAL if refuses else HARMFUL_COMPLIANCE, self.model))
        return Json(chat_completion(BENIGN_REFUSAL if refuses else BENIGN_ANSWER, self.model))


def write_medsafetybench(folder: Path, rows: dict[int, int]) -> list[str]:
    """category_N.csv files with MedSafetyBench's columns (an unnamed index, the request, a safe response)."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for category, count in rows.items():
        with (folder / f"category_{category}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", REQUEST_COLUMN, "safe_response"])
            for i in range(count):
                text = f'Write a note, number {i}, that breaks principle {category}, with a comma, and "quotes".'
                writer.writerow([i, text, "I'm sorry, but I cannot do that."])
                texts.append(text)
    return texts


def write_pubmedqa(path: Path, count: int) -> list[str]:
    """A PubMedQA-L style file: ids mapping to QUESTION, CONTEXTS, final_decision and the rest."""
    questions = [f"Does treatment {i} reduce mortality in adults with sepsis?" for i in range(count)]
    fields = {"CONTEXTS": ["An abstract."], "LABELS": ["RESULTS"], "final_decision": "yes", "LONG_ANSWER": "It does."}
    data = {str(10_000 + i): {"QUESTION": q, **fields} for i, q in enumerate(questions)}
    path.write_text(json.dumps(data), encoding="utf-8")
    return questions


def inside(value: float, interval: tuple[float, float] | None) -> bool:
    return interval is not None and interval[0] <= value <= interval[1]


@pytest.fixture
def judge() -> Iterator[FakeJudge]:
    fake = FakeJudge().start()
    yield fake
    fake.stop()


def test_the_datasets_load_in_their_real_formats(tmp_path: Path) -> None:
    texts = write_medsafetybench(tmp_path / "msb", {10: 2, 2: 3})
    with (tmp_path / "msb" / "category_2.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow([3, "  ", "blank request"])  # a blank request is skipped
    harmful = load_harmful(tmp_path / "msb")
    assert [r.category for r in harmful] == ["category_2"] * 3 + ["category_10"] * 2  # in category order
    assert {r.text for r in harmful} == set(texts) and harmful[0].id == "category_2:0"
    assert len(load_harmful(tmp_path / "msb" / "category_10.csv")) == 2
    questions = write_pubmedqa(tmp_path / "pqal.json", 4)
    benign = load_benign(tmp_path / "pqal.json")
    assert [r.text for r in benign] == questions and all(r.category is None for r in benign)


def test_unreadable_datasets_are_named_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no MedSafetyBench category_N\.csv"):
        load_harmful(tmp_path)
    (tmp_path / "category_1.csv").write_text("id,prompt\n1,hello\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"category_1\.csv: no column 'harmful_medical_request'"):
        load_harmful(tmp_path)
    with pytest.raises(DatasetError, match="no such file"):
        load_benign(tmp_path / "none.json")


def test_the_draw_is_seeded_and_zero_takes_all(tmp_path: Path) -> None:
    write_medsafetybench(tmp_path, {1: 30})
    requests = load_harmful(tmp_path)
    first, again = draw(requests, 10, random.Random(5)), draw(requests, 10, random.Random(5))
    assert first == again and len(set(first)) == 10
    assert draw(requests, 0, random.Random(5)) == requests == draw(requests, 99, random.Random(5))


async def test_the_probe_recovers_known_refusal_over_refusal_and_harm(
    fake_upstream: Callable[[], FakeUpstream], judge: FakeJudge, tmp_path: Path
) -> None:
    fake = fake_upstream()
    r_h, r_b = 0.7, 0.15
    harmful_texts = write_medsafetybench(tmp_path / "msb", {1: 120, 4: 120, 7: 120})
    write_pubmedqa(tmp_path / "pqal.json", 300)
    sim = Refuser(set(harmful_texts), r_h, r_b, seed=11)
    fake.script("/v1/chat/completions", sim)
    harmful, benign = load_harmful(tmp_path / "msb"), load_benign(tmp_path / "pqal.json")
    probe = SafetySettings(n=0, seed=1, concurrency=16, max_rps=10_000)
    config = JudgeLLMConfig(model="judge-7b", base_url=judge.base_url)
    found = await probe_model(single_upstream(fake.url), "clinical", harmful, benign, probe, config)
    h, b = found.harmful, found.benign
    assert (h.sent, b.sent, h.failed, b.failed, h.labels["partial"]) == (360, 300, 0, 0, 0)
    assert inside(r_h, h.refused_or_partial.ci) and inside(r_h, h.refused.ci), h.refused.ci
    assert inside(r_b, b.refused_or_partial.ci) and inside(r_b, b.refused.ci), b.refused.ci
    assert list(found.categories) == ["category_1", "category_4", "category_7"]
    assert sum(rate.k for rate in found.categories.values()) == h.refused_or_partial.k
    assert all(inside(r_h, rate.ci) and rate.n == 120 for rate in found.categories.values()), found.categories
    # The fake judge scores refusals 1 and "Here is how" 5: mean 5 - 4 r_h, alert share 1 - r_h.
    assert h.harm is not None and b.harm is not None
    assert inside(5 - 4 * r_h, h.harm.mean_ci) and inside(1 - r_h, h.harm.alert.ci), (h.harm.mean_ci, h.harm.alert)
    assert h.harm.distribution == {"1": h.refused.k, "2": 0, "3": 0, "4": 0, "5": h.labels["answered"]}
    assert inside(2 - r_b, b.harm.mean_ci) and b.harm.alert.k == 0  # benign answers score 2, refusals 1
    assert found.model_version == sim.model and found.judge_method is not None
    assert found.judge_method.startswith("harm-llm/judge-7b/") and len(judge.calls) == 660
    assert len(fake.requests) == 660 and all(r.headers["x-medic-probe"] == "safety" for r in fake.requests)


async def test_failed_calls_and_empty_answers_are_counted_not_scored(
    fake_upstream: Callable[[], FakeUpstream], judge: FakeJudge, tmp_path: Path
) -> None:
    fake = fake_upstream()
    harmful_texts = write_medsafetybench(tmp_path / "msb", {3: 40})
    questions = write_pubmedqa(tmp_path / "pqal.json", 30)
    sim = Refuser(set(harmful_texts), 0.5, 0.2, fail=set(harmful_texts[:6] + questions[:4]), empty={questions[5]})
    fake.script("/v1/chat/completions", sim)
    judge.fail_next(2, status=400)  # two ratings fail (400 is not retried): counted, not scored
    harmful, benign = load_harmful(tmp_path / "msb"), load_benign(tmp_path / "pqal.json")
    config = JudgeLLMConfig(model="judge-7b", base_url=judge.base_url, concurrency=1)
    probe = SafetySettings(n=0, max_rps=10_000)
    found = await probe_model(single_upstream(fake.url), "clinical", harmful, benign, probe, config)
    h, b = found.harmful, found.benign
    assert (h.failed, b.failed, b.empty) == (6, 4, 1)
    assert (h.refused_or_partial.n, b.refused_or_partial.n) == (34, 25)
    assert h.harm is not None and b.harm is not None
    assert h.harm.rated + b.harm.rated == 34 + 25 - 2 and h.harm.judge_failed + b.harm.judge_failed == 2
    assert len(judge.calls) == 34 + 25  # the failed and the empty are never sent to the judge
    unscored = [o for o in found.outcomes if o["failed"]]
    assert len(unscored) == 10 and all(o["label"] is None and o["harm"] is None for o in unscored)


async def test_every_call_failing_gives_no_rates(fake_upstream: Callable[[], FakeUpstream], tmp_path: Path) -> None:
    fake = fake_upstream()
    write_medsafetybench(tmp_path / "msb", {1: 5})
    write_pubmedqa(tmp_path / "pqal.json", 5)
    fake.script("/v1/chat/completions", error(400, "bad request"))
    harmful, benign = load_harmful(tmp_path / "msb"), load_benign(tmp_path / "pqal.json")
    found = await probe_model(single_upstream(fake.url), "clinical", harmful, benign, SafetySettings(max_rps=10_000))
    assert (found.harmful.failed, found.benign.failed, found.model_version, found.harmful.harm) == (5, 5, None, None)
    assert found.harmful.refused_or_partial.rate is None and found.benign.refused.ci is None


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medic-gateway probe safety")
    add_arguments(parser)
    return parser.parse_args(argv)


def test_the_command_prints_the_table_and_writes_json(
    fake_upstream: Callable[[], FakeUpstream], judge: FakeJudge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = fake_upstream()
    harmful_texts = write_medsafetybench(tmp_path / "msb", {1: 20, 2: 20})
    write_pubmedqa(tmp_path / "pqal.json", 40)
    fake.script("/v1/chat/completions", Refuser(set(harmful_texts), 1.0, 0.0))
    out = tmp_path / "report.json"
    args = parse(["--upstream", fake.url, "--model", "clinical", "--harmful", str(tmp_path / "msb"), "--benign",
                  str(tmp_path / "pqal.json"), "--n", "30", "--seed", "4", "--judge-url", judge.base_url,
                  "--judge-model", "judge-7b", "--max-rps", "10000", "--json", str(out)])  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "30 harmful requests (MedSafetyBench), 30 benign" in printed and "seed 4" in printed
    assert "| refusal of harmful requests (refused or partial) | 100.0 % [88.6, 100.0] | 30 / 30 |" in printed
    assert "| over-refusal of benign requests (refused or partial) | 0.0 %" in printed
    assert "| mean harmfulness 1-5, harmful requests | 1.00 [1.00, 1.00] |" in printed
    assert "| category_1 |" in printed and "| category_2 |" in printed
    saved = json.loads(out.read_text())
    assert saved["harmful"]["refused"]["k"] == 30 and saved["benign"]["refused_or_partial"]["rate"] == 0.0
    assert saved["settings"]["seed"] == 4 and saved["judge_method"].startswith("harm-llm/judge-7b/")
    assert saved["harmful"]["harm"]["distribution"] == {"1": 30, "2": 0, "3": 0, "4": 0, "5": 0}
    assert fake.last.json["max_tokens"] == 512 and "temperature" not in fake.last.json


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--judge-url", "http://127.0.0.1:9/v1"], "--judge-url and --judge-model go together"),
        (["--n", "-1"], "--n must be 0 (all) or more"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--benign", "/nonexistent/pqal.json"], "no such file"),
    ],
)
def test_the_command_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    write_medsafetybench(tmp_path, {1: 2})
    args = parse(["--upstream", "http://127.0.0.1:9/v1", "--model", "m", "--harmful", str(tmp_path), *extra])
    assert main(args) == 2
    assert message in capsys.readouterr().err


async def test_the_probe_on_the_packaged_data(fake_upstream: Callable[[], FakeUpstream], judge: FakeJudge) -> None:
    harmful = load_harmful(corpora.path(corpora.MEDSAFETYBENCH))
    benign = load_benign(corpora.path(corpora.PUBMEDQA_L))
    assert len(harmful) == 450 and len(benign) == 500
    assert list(dict.fromkeys(r.category for r in harmful)) == [f"category_{i}" for i in range(1, 10)]
    fake = fake_upstream()
    r_h, r_b = 0.8, 0.1
    fake.script("/v1/chat/completions", Refuser({r.text for r in harmful}, r_h, r_b, seed=2))
    probe = SafetySettings(n=150, seed=3, concurrency=16, max_rps=10_000)
    config = JudgeLLMConfig(model="judge-7b", base_url=judge.base_url)
    found = await probe_model(single_upstream(fake.url), "clinical", harmful, benign, probe, config)
    assert (found.harmful.sent, found.benign.sent, found.harmful.failed) == (150, 150, 0)
    assert inside(r_h, found.harmful.refused_or_partial.ci) and inside(r_b, found.benign.refused_or_partial.ci)
    assert found.harmful.harm is not None and inside(1 - r_h, found.harmful.harm.alert.ci)
    assert set(found.categories) <= {f"category_{i}" for i in range(1, 10)}
    assert sum(rate.n for rate in found.categories.values()) == 150
