"""The evaluate command: record forms, bad lines, skipped samples, batching and the CLI entry point."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import pytest

from judges import evaluate
from judges.evaluate import Counts, evaluate_file, parse_record
from judges.refusal import RefusalJudge
from pipeline.sample import Choice, Response, Result, Sample

REFUSAL = "I'm sorry, but I can't help with that request."
ANSWER = "For adults the usual maximum is 4 g of paracetamol in 24 hours."


def short(content: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "request": {"model": "clinic-small", "messages": [{"role": "user", "content": "How much paracetamol?"}]},
        "response": {
            "model": "llama-3.1-8b",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
        },
        **extra,
    }


def write(path: Path, *lines: dict[str, Any] | str) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def results(text: str) -> list[Result]:
    return [Result.model_validate_json(line) for line in text.splitlines()]


def test_short_form_becomes_a_raw_sample() -> None:
    sample = parse_record(json.dumps(short(ANSWER, request_id="case-1", tenant="ward-4")))
    assert (sample.request_id, sample.model, sample.tenant) == ("case-1", "clinic-small", "ward-4")
    assert sample.privacy == "raw"
    assert (sample.operation, sample.status, sample.stream) == ("chat", 200, False)
    assert sample.output() == ANSWER
    assert sample.response.choices[0].finish_reason == "stop"
    assert sample.response.usage == {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14}
    assert sample.response.model == "llama-3.1-8b"


def test_short_form_model_and_request_id_fallbacks() -> None:
    record = short(ANSWER, model="override")
    assert parse_record(json.dumps(record)).model == "override"
    del record["model"], record["request"]["model"]
    sample, other = parse_record(json.dumps(record)), parse_record(json.dumps(record))
    assert sample.model == "llama-3.1-8b"
    assert len(sample.request_id) == 32 and sample.request_id != other.request_id


def test_short_form_text_completion() -> None:
    record = {"request": {"model": "m", "prompt": "Define sepsis."}, "response": {"choices": [{"text": "A syndrome"}]}}
    sample = parse_record(json.dumps(record))
    assert (sample.operation, sample.output()) == ("text_completion", "A syndrome")


def test_full_form_is_a_sample_as_enqueued() -> None:
    original = Sample(request_id="q-1", model="m", response=Response(choices=[Choice(content=REFUSAL)]))
    assert parse_record(original.model_dump_json()) == original


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object, not list"),
        (json.dumps(short(ANSWER, comment="x")), "unknown keys ['comment']"),
        (json.dumps({"request": {}, "response": {"choices": []}}), "no model"),
        (json.dumps({"request": {"model": "m"}, "response": {}}), "choices"),
        (json.dumps({"version": 1, "request_id": "r", "model": "m", "status": "SECRET-TEXT"}), "status"),
    ],
)
def test_bad_records_are_described_without_their_content(line: str, reason: str) -> None:
    with pytest.raises(evaluate.RecordError) as error:
        parse_record(line)
    assert reason in str(error.value)
    assert "SECRET" not in str(error.value)


async def test_evaluate_file_counts_and_reports_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    failed = Sample(request_id="e-1", model="m", status=502, privacy="raw")
    path = write(
        tmp_path / "records.jsonl",
        short(REFUSAL, request_id="a"),
        short(ANSWER, request_id="b"),
        "{broken",
        "",
        failed.model_dump_json(),
        short("", request_id="empty"),
    )
    output = io.StringIO()
    counts = await evaluate_file(RefusalJudge(), path, output)
    assert counts == Counts(records=5, evaluated=2, skipped=2, invalid=1, results=4)
    assert "line 3: not JSON" in capsys.readouterr().err
    written = results(output.getvalue())
    assert [(r.request_id, r.indicator, r.label) for r in written] == [
        ("a", "refusal", "refused"),
        ("a", "response_length", None),
        ("b", "refusal", "answered"),
        ("b", "response_length", None),
    ]


class RecordingJudge(RefusalJudge):
    batch_size = 2

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        self.batches.append(len(samples))
        return await super().evaluate(samples)


async def test_samples_are_evaluated_in_batches_of_the_judge_batch_size(tmp_path: Path) -> None:
    path = write(tmp_path / "records.jsonl", *(short(ANSWER, request_id=str(i)) for i in range(5)))
    judge, output = RecordingJudge(), io.StringIO()
    await evaluate_file(judge, path, output)
    assert judge.batches == [2, 2, 1]
    assert [r.request_id for r in results(output.getvalue())][::2] == ["0", "1", "2", "3", "4"]


def parsed(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


def test_main_writes_results_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = write(tmp_path / "records.jsonl", short(REFUSAL), "nope", short(ANSWER))
    out = tmp_path / "results.jsonl"
    assert evaluate.main(parsed("--judge", "refusal", "--input", str(records), "--output", str(out))) == 0
    err = capsys.readouterr().err
    assert "line 2: not JSON" in err
    assert err.strip().endswith("3 records, 2 evaluated, 0 skipped, 1 invalid (4 results)")
    assert [r.label for r in results(out.read_text()) if r.indicator == "refusal"] == ["refused", "answered"]


def test_main_writes_to_stdout_without_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = write(tmp_path / "records.jsonl", short(REFUSAL))
    assert evaluate.main(argparse.Namespace(judge="refusal", input=records, output=None, config=None)) == 0
    assert [r.indicator for r in results(capsys.readouterr().out)] == ["refusal", "response_length"]


def test_main_rejects_an_unknown_judge_and_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = write(tmp_path / "records.jsonl", short(REFUSAL))
    assert evaluate.main(argparse.Namespace(judge="nope", input=records, output=None, config=None)) == 2
    known = (
        "cef-cascade, cef-lite, cef-llm, cef-llm-batch, fidelity, guard, harm-llm, refusal, safety-rules, "
        "sycophancy-live"
    )
    assert f"unknown judge 'nope'; known: {known}" in capsys.readouterr().err
    missing = argparse.Namespace(judge="refusal", input=tmp_path / "missing.jsonl", output=None, config=None)
    assert evaluate.main(missing) == 2
    assert "no such file" in capsys.readouterr().err
