#!/usr/bin/env python3
"""Throughput of RefusalJudge.evaluate alone: samples per second in one process, batches of 64.

Samples are realistic chat exchanges built from the packaged reference data (corpora/), in equal thirds: MedSafetyBench
harmful requests with their refusing responses; PubMedQA questions with their long answers; and the same
questions answered at length (the abstract's contexts followed by the long answer, a few hundred words). The
judge's own work is measured (rules and Result objects), not queueing or storage: the worker's end-to-end
figure is a separate benchmark.

    .venv/bin/python bench/worker_judge.py [--duration 5] [--batch 64]

Needs the project installed in the interpreter (``pip install -e .``) (it reads the packaged data sets).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import sys
import time

import corpora
from judges.refusal import RefusalJudge
from pipeline.sample import Choice, Response, Sample

DATA = corpora.path(".")


def exchanges() -> list[tuple[str, str]]:
    """(question, answer) pairs: MedSafetyBench refusals, PubMedQA short and long answers, interleaved."""
    harmful = [
        (row["harmful_medical_request"], row["safe_response"])
        for path in sorted((DATA / "medsafetybench").glob("category_*.csv"))
        for row in csv.DictReader(path.open(encoding="utf-8"))
    ]
    questions = json.loads((DATA / "pubmedqa" / "pqal-dev.json").read_text(encoding="utf-8"))
    short = [(q["QUESTION"], q["LONG_ANSWER"]) for q in questions.values()]
    long = [(q["QUESTION"], "\n\n".join([*q["CONTEXTS"], q["LONG_ANSWER"]])) for q in questions.values()]
    return [pair for pairs in zip(harmful, short, long, strict=False) for pair in pairs]


def sample(number: int, question: str, answer: str) -> Sample:
    return Sample(
        request_id=f"bench-{number}",
        model="clinic-small",
        request={"model": "clinic-small", "messages": [{"role": "user", "content": question}]},
        response=Response(choices=[Choice(content=answer, finish_reason="stop")], model="llama-3.1-8b"),
    )


async def measure(batches: list[list[Sample]], duration_s: float) -> tuple[int, float]:
    judge = RefusalJudge()
    done = 0
    started = time.perf_counter()
    for batch in itertools.cycle(batches):
        await judge.evaluate(batch)
        done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= duration_s:
            return done, elapsed
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds to run (default 5)")
    parser.add_argument("--batch", type=int, default=RefusalJudge.batch_size, help="samples per evaluate call")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"reference data not found at {DATA}", file=sys.stderr)
        return 2
    samples = [sample(i, q, a) for i, (q, a) in enumerate(exchanges())]
    batches = [samples[i : i + args.batch] for i in range(0, len(samples), args.batch)]
    done, elapsed = asyncio.run(measure(batches, args.duration))
    mean_chars = sum(len(s.output()) for s in samples) / len(samples)
    print(f"RefusalJudge.evaluate: {done / elapsed:,.0f} samples/s ({done} samples in {elapsed:.1f} s, "
          f"batch {args.batch}, {len(samples)} distinct samples of {mean_chars:,.0f} characters on average, "
          f"Python {sys.version.split()[0]})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
