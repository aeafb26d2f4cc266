#!/usr/bin/env python3
"""The model-backed judges on the local engine (medic-gateway local-model): per judge, calls, prompt and
completion tokens and seconds per sample, one sample at a time, and how many samples came out well formed
(every result's score null or a finite number); and the engine tokenizer's tokens per word on clinical notes.

    .venv/bin/python bench/local_judges.py [--samples 4] [--max-tokens 256] [--threads 2]

Samples: fidelity judges get MEDEC-MS notes (source: the corrected note; candidate: the note with its planted
error); harm-llm gets MedSafetyBench harmful requests with their refusing answers. The engine is the packaged
SmolLM2-135M (extra ``local``). The figures are what a judge costs on this engine, not what it is worth: a model
this small is no judge (docs/judges.md).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import socket
import time
import urllib.request
from typing import Any

import corpora
from config import JudgeLLMConfig
from gateway.local_model import DEFAULT_MODEL, MODELS, Progress, install, start
from judges.backends import HttpBackend
from judges.fidelity.llm import CefLlmJudge
from judges.judge import Judge
from judges.safety.judges import HarmJudge
from pipeline.sample import Choice, Response, Sample


def fidelity_samples(n: int) -> list[Sample]:
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["Error Flag"] == "1"][:n]
    return [Sample(request_id=f"f{i}", model="m", request={"messages": [
        {"role": "user", "content": f"Summarise the following note:\n{r['Corrected Text']}"}]},
        response=Response(choices=[Choice(content=r["Text"])])) for i, r in enumerate(rows)]  # fmt: skip


def harm_samples(n: int) -> list[Sample]:
    with (corpora.path(corpora.MEDSAFETYBENCH) / "category_1.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    return [Sample(request_id=f"h{i}", model="m", request={"messages": [
        {"role": "user", "content": r["harmful_medical_request"]}]},
        response=Response(choices=[Choice(content=r["safe_response"])])) for i, r in enumerate(rows)]  # fmt: skip


def tokens_per_word(base_url: str, notes: int = 60) -> tuple[int, int]:
    """(words, tokens) of the first ``notes`` MEDEC-MS notes by the engine's own tokenizer."""
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(newline="", encoding="utf-8") as f:
        texts = [r["Text"] for r in csv.DictReader(f)][:notes]
    tokens = 0
    for text in texts:
        request = urllib.request.Request(base_url.removesuffix("/v1") + "/extras/tokenize/count",
                                         data=json.dumps({"input": text}).encode(),
                                         headers={"content-type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            tokens += int(json.load(response)["count"])
    return sum(len(t.split()) for t in texts), tokens


async def measure(name: str, judge: Judge, backend: HttpBackend, samples: list[Sample]) -> dict[str, Any]:
    started, well_formed, failed = time.perf_counter(), 0, 0
    for sample in samples:
        try:
            (results,) = await judge.evaluate([sample])
            well_formed += bool(results) and all(r.score is None or math.isfinite(r.score) for r in results)
        except Exception:  # a failed sample is counted, the run goes on
            failed += 1
    seconds = time.perf_counter() - started
    await judge.close()
    n, usage = len(samples), backend.usage
    return {"judge": name, "samples": n, "calls": usage.calls / n, "prompt": usage.prompt_tokens / n,
            "completion": usage.completion_tokens / n, "seconds": seconds / n, "well_formed": well_formed,
            "failed": failed, "method": judge.method}  # fmt: skip


async def run(args: argparse.Namespace, base_url: str, name: str) -> list[dict[str, Any]]:
    rows = []
    for judge_name in ("cef-llm", "cef-llm-batch", "harm-llm"):
        backend = HttpBackend(JudgeLLMConfig(model=name, base_url=base_url, max_tokens=args.max_tokens,
                                             concurrency=4, timeout_s=600))  # fmt: skip
        if judge_name == "harm-llm":
            judge: Judge = HarmJudge(backend)
            samples = harm_samples(args.samples)
        else:
            judge = CefLlmJudge(backend, batched=judge_name == "cef-llm-batch")
            samples = fidelity_samples(args.samples)
        rows.append(await measure(judge_name, judge, backend, samples))
        print(row_line(rows[-1]), flush=True)
    return rows


def row_line(r: dict[str, Any]) -> str:
    return (f"| {r['judge']} | {r['samples']} | {r['calls']:.1f} | {r['prompt']:,.0f} + {r['completion']:,.0f} | "
            f"{r['seconds']:.1f} | {r['well_formed']} | {r['failed']} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256, help="completion tokens per judge call")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model = MODELS[DEFAULT_MODEL]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = start(install(model, Progress()), model.name, model.file_sha256, port=port, threads=args.threads)
    try:
        words, tokens = tokens_per_word(engine.base_url)
        print(
            f"engine {engine.model}, {args.threads} threads, max_tokens {args.max_tokens}; its tokenizer: "
            f"{tokens / words:.2f} tokens per word on 60 MEDEC-MS notes ({words:,} words)\n"
        )
        print("| judge | samples | calls per sample | tokens per sample (prompt + completion) | seconds per sample "
              "| well formed | failed |\n|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
        asyncio.run(run(args, engine.base_url, model.name))
    finally:
        engine.stop()


if __name__ == "__main__":
    main()
