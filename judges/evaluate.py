"""Offline evaluation: run one judge over a JSONL file of exchanges (``medic-gateway evaluate``).

Each line is either a full Sample as the gateway enqueues it (recognised by its "version" key) or the short
form {"request": <chat request>, "response": <chat.completion>, "request_id"?, "model"?, "tenant"?}. The
record format is documented in docs/evaluate.md. One Result is written per output line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson
from pydantic import ValidationError

from config import ConfigError, load_config
from judges.judge import Judge
from judges.progress import Progress, shown
from judges.registry import JUDGES, UnknownJudgeError, build
from pipeline.sample import Choice, Response, Sample

SHORT_KEYS = frozenset({"request", "response", "request_id", "model", "tenant", "task"})


class RecordError(ValueError):
    """A line that is not a valid record; the message never quotes the record's content."""


@dataclass
class Counts:
    records: int = 0  # non-blank lines
    evaluated: int = 0  # samples the judge evaluated
    skipped: int = 0  # valid samples the judge does not apply to
    invalid: int = 0  # lines that are not valid records
    results: int = 0  # result lines written

    def summary(self) -> str:
        return (
            f"{self.records} records, {self.evaluated} evaluated, {self.skipped} skipped, {self.invalid} invalid "
            f"({self.results} results)"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the evaluate subcommand; ``main`` reads them from the parsed namespace."""
    parser.add_argument("--judge", required=True, metavar="NAME", help=f"one of: {', '.join(sorted(JUDGES))}")
    parser.add_argument("--input", required=True, type=Path, metavar="FILE", help="JSONL records (docs/evaluate.md)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="JSONL results (default: standard output)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="gateway YAML whose judging section to use")


def main(args: argparse.Namespace) -> int:
    """Runs the command: 0 when the file was read to its end (bad lines included), 2 on a usage error."""
    try:
        config = load_config(args.config) if args.config is not None else None
        judge = build([args.judge], config.judging if config is not None else None, config)[0]
    except (UnknownJudgeError, ConfigError, ValueError) as error:
        print(f"medic-gateway evaluate: {error}", file=sys.stderr)
        return 2
    input_path = Path(args.input)
    if not input_path.is_file():
        print(f"medic-gateway evaluate: {input_path}: no such file", file=sys.stderr)
        return 2
    with input_path.open("rb") as lines:
        records = sum(1 for _ in lines)
    with _opened(args.output) as output, shown(f"evaluate {judge.name}", records, "record") as bar:
        counts = asyncio.run(_evaluate_and_close(judge, input_path, output, bar))
    print(f"medic-gateway evaluate: {counts.summary()}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _opened(path: Path | str | None) -> Iterator[TextIO]:
    if path is None or str(path) == "-":
        yield sys.stdout
        return
    with Path(path).open("w", encoding="utf-8") as file:
        yield file


async def _evaluate_and_close(judge: Judge, input_path: Path, output: TextIO, bar: Progress | None = None) -> Counts:
    try:
        return await evaluate_file(judge, input_path, output, bar)
    finally:
        await judge.close()


async def evaluate_file(judge: Judge, input_path: Path, output: TextIO, bar: Progress | None = None) -> Counts:
    """Evaluates every record the judge applies to, in batches of ``judge.batch_size``, writing results in order.

    Bad lines are reported on stderr with their line number and counted, never fatal; blank lines are ignored.
    A judge that raises stops the run (offline there is nobody to retry the batch).
    """
    counts = Counts()
    batch: list[Sample] = []
    with input_path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if bar is not None:
                bar.advance()
            sample = _accepted(judge, number, line, counts)
            if sample is not None:
                batch.append(sample)
            if len(batch) >= judge.batch_size:
                await _evaluate_batch(judge, batch, output, counts)
                batch = []
    if batch:
        await _evaluate_batch(judge, batch, output, counts)
    return counts


def _accepted(judge: Judge, number: int, line: bytes, counts: Counts) -> Sample | None:
    """The line's sample when the judge applies to it; counts the line either way."""
    if not line.strip():
        return None
    counts.records += 1
    try:
        sample = parse_record(line)
    except RecordError as error:
        counts.invalid += 1
        print(f"line {number}: {error}", file=sys.stderr)
        return None
    if not judge.applies(sample):
        counts.skipped += 1
        return None
    return sample


async def _evaluate_batch(judge: Judge, batch: list[Sample], output: TextIO, counts: Counts) -> None:
    results = await judge.evaluate(batch)
    if len(results) != len(batch):
        raise RuntimeError(f"judge {judge.name} returned {len(results)} result lists for {len(batch)} samples")
    for sample_results in results:
        for result in sample_results:
            output.write(result.model_dump_json() + "\n")
        counts.results += len(sample_results)
    counts.evaluated += len(batch)


def parse_record(line: bytes | str) -> Sample:
    """One JSONL line as a Sample: a full Sample when it has "version", else the short form."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        raise RecordError(f"not JSON ({error.msg})") from None
    if not isinstance(record, dict):
        raise RecordError(f"a record is a JSON object, not {type(record).__name__}")
    try:
        return Sample.model_validate(record) if "version" in record else short_form(record)
    except ValidationError as error:
        raise RecordError(_describe(error)) from None


def short_form(record: dict[str, Any]) -> Sample:
    """The Sample for {"request", "response", "request_id"?, "model"?, "tenant"?, "task"?} (a chat or text
    completion; "task" states the fidelity task: transform, grounded_qa or open).

    Choice text comes from choices[].message.content (chat) or choices[].text (completions); the model is the
    record's, else the request's, else the response's; a missing request id is generated; privacy is "raw".
    """
    unknown = sorted(set(record) - SHORT_KEYS)
    if unknown:
        raise RecordError(f"unknown keys {unknown} (short form keys: {sorted(SHORT_KEYS)}; full form has 'version')")
    request, response = record.get("request"), record.get("response")
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise RecordError('the short form needs "request" and "response" objects')
    model = record.get("model") or request.get("model") or response.get("model")
    if not model:
        raise RecordError('no model: give "model" in the record, the request or the response')
    return Sample(
        request_id=record.get("request_id") or secrets.token_hex(16),
        operation="chat" if "messages" in request or "prompt" not in request else "text_completion",
        model=model,
        tenant=record.get("tenant") or "default",
        task=record.get("task"),
        stream=request.get("stream") is True,
        privacy="raw",
        request=request,
        response=_response(response),
    )


def _response(body: dict[str, Any]) -> Response:
    choices = body.get("choices")
    if not isinstance(choices, list):
        raise RecordError('"response" needs a "choices" list')
    return Response(
        choices=[_choice(i, c) for i, c in enumerate(choices)], usage=body.get("usage"), model=body.get("model")
    )


def _choice(position: int, choice: Any) -> Choice:
    if not isinstance(choice, dict):
        raise RecordError(f"choices[{position}] is not an object")
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else choice.get("text")
    if isinstance(content, list):  # content parts: keep the text ones
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return Choice(index=choice.get("index", position), content=content or "", finish_reason=choice.get("finish_reason"))


def _describe(error: ValidationError) -> str:
    """Field paths and reasons only: pydantic's default text quotes input values, which may be clinical text."""
    problems = [f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors(include_input=False)]
    return "invalid record: " + "; ".join(problems[:5])
