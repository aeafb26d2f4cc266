#!/usr/bin/env python3
"""Speed of the fidelity judges, side by side: cef-lite on one core, cef-llm and cef-llm-batch on a fake judge.

Samples: handover summaries built from MEDEC-MS (Ben Abacha et al., Findings of ACL 2025; CC BY 4.0),
corpora/medec/medec-ms-validation.csv (packaged). A MEDEC note is about 125 words; a sample's source joins
corrected notes ("Corrected Text", or "Text" where the note has no error) in file order until it has at least
``--min-words`` words (300) and stays under 400 (a note that would pass 400 waits for the next sample: cef-llm
asks 10 + 10 questions of longer texts), sent as "Summarise the following note for the handover.\\n\\nNote:\\n"
+ source; the candidate joins the same notes' "Text" (with its planted error, where it has one).

1. cef-lite: ``CefLiteJudge.judge`` one sample after another in this process, one thread, pinned to one CPU
   (sched_setaffinity), after a warm-up: samples per second and CPU seconds per sample (time.process_time).
2. cef-llm (22 calls per sample) and cef-llm-batch (6 calls) through the real HTTP backend against the fake
   judge model ``bench/fake_upstream.py --judge``, answering each call after ``--latency-ms`` (50) with JSON its
   schema accepts (every answer YES). The fake runs in a child process (its CPU does not share this process's
   GIL):
   - one by one: a backend with concurrency 1, samples evaluated one at a time: each call waits for the last;
   - concurrent: a backend with ``--concurrency`` calls in flight (64), the samples cut into batches of the
     judge's batch_size (8) and ``--worker-concurrency`` batches (4) evaluated at once under a semaphore, the
     way ``judges.worker.Worker`` runs them.
   Both after a warm-up that also opens the connections. Client CPU per call is this process's process_time
   over the run divided by the calls; the fake's token counts are word counts.

    .venv/bin/python bench/fidelity_speed.py [--quick] [--samples 200] [--latency-ms 50] [--concurrency 64]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import http.client
import importlib.metadata
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

import corpora
from config import JudgeLLMConfig
from judges.backends import HttpBackend, Usage, open_backend
from judges.fidelity.lite import CefLiteJudge
from judges.fidelity.llm import LONG_WORDS, CefLlmJudge
from judges.fidelity.task import classify
from pipeline.sample import Choice, Response, Result, Sample

FAKE_UPSTREAM = Path(__file__).resolve().parent / "fake_upstream.py"
DATA = corpora.path(corpora.MEDEC_MS_VALIDATION)
CITATION = "MEDEC-MS validation split (Ben Abacha et al., Findings of ACL 2025; CC BY 4.0)"
PROMPT = "Summarise the following note for the handover.\n\nNote:\n"
LITE_TARGET = 20.0  # samples per second per core (the performance issue)
RATIO_TARGET = 20.0  # concurrent / one by one (the performance issue)
LITE_WARMUP = 20  # cef-lite samples judged before the clock starts
Mode = Literal["one by one", "concurrent"]
T = TypeVar("T")


# ------------------------------------------------------------------------------------------------ samples


@dataclass(frozen=True, slots=True)
class Pair:
    source: str
    candidate: str
    notes: int


def read_notes(path: Path) -> list[tuple[str, str]]:
    """(correct note, note as written) per MEDEC row; a row without an error has "NA" as its corrected text."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        written = row["Text"].strip()
        corrected = row["Corrected Text"].strip()
        out.append((corrected if corrected and corrected != "NA" else written, written))
    return out


def build_pairs(notes: list[tuple[str, str]], count: int, min_words: int) -> list[Pair]:
    """``count`` pairs of notes joined in file order (wrapping around) until the source has ``min_words`` words.

    A note that would bring the source or the candidate to LONG_WORDS words waits for the next pair: cef-llm
    asks 10 + 10 questions of a text that long (42 calls instead of 22), which would mix two costs in one run.
    """
    pending: deque[tuple[str, str]] = deque()
    pairs: list[Pair] = []
    while len(pairs) < count:
        chosen: list[tuple[str, str]] = []
        skipped: list[tuple[str, str]] = []
        while _words([s for s, _ in chosen]) < min_words:
            if len(skipped) > len(notes):
                raise ValueError(f"no notes add up to {min_words} to {LONG_WORDS - 1} words")
            if not pending:
                pending.extend(notes)
            note = pending.popleft()
            fits = max(_words([s for s, _ in [*chosen, note]]), _words([c for _, c in [*chosen, note]])) < LONG_WORDS
            (chosen if fits else skipped).append(note)
        pending.extendleft(reversed(skipped))
        pairs.append(Pair("\n\n".join(s for s, _ in chosen), "\n\n".join(c for _, c in chosen), len(chosen)))
    return pairs


def _words(texts: list[str]) -> int:
    return sum(len(text.split()) for text in texts)


def to_sample(number: int, pair: Pair) -> Sample:
    sample = Sample(
        request_id=f"bench-{number}",
        model="bench",
        request={"messages": [{"role": "user", "content": PROMPT + pair.source}]},
        response=Response(choices=[Choice(content=pair.candidate)]),
    )
    task = classify(sample)
    if task.kind != "transform" or task.source.strip() != pair.source.strip():
        raise RuntimeError(f"sample {number} is not read as a summary of its note")
    return sample


def scored(per_sample: list[list[Result]]) -> int:
    """Samples with a conformity score (not null): the judge did its work."""
    return sum(any(r.indicator == "fidelity_conformity" and r.score is not None for r in rs) for rs in per_sample)


# ------------------------------------------------------------------------------------------------ cef-lite


@dataclass
class LiteRun:
    samples: int
    warmup: int
    cpu: int | None  # the CPU the run was pinned to
    wall_s: float
    cpu_s: float
    scored: int

    @property
    def per_second(self) -> float:
        return self.samples / self.wall_s

    @property
    def cpu_ms_per_sample(self) -> float:
        return 1000 * self.cpu_s / self.samples


@contextlib.contextmanager
def one_cpu() -> Iterator[int | None]:
    """Pin this process to one of its CPUs for the duration (where the platform allows it)."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    cpu = max(allowed)  # the last one: CPU 0 takes most interrupts
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, allowed)


def measure_lite(samples: list[Sample], warmup: list[Sample]) -> LiteRun:
    judge = CefLiteJudge()
    if threading.active_count() != 1:
        raise RuntimeError("cef-lite must be measured in a single-threaded process")
    with one_cpu() as cpu:
        for sample in warmup:
            judge.judge(sample)
        wall, cpu_time = time.perf_counter(), time.process_time()
        per_sample = [judge.judge(sample) for sample in samples]
        wall, cpu_time = time.perf_counter() - wall, time.process_time() - cpu_time
    return LiteRun(len(samples), len(warmup), cpu, wall, cpu_time, scored(per_sample))


# ------------------------------------------------------------------------------------------------ fake judge


class FakeProcess:
    """``bench/fake_upstream.py --judge`` in a child process on a free port, answering each call after
    ``latency_ms``; stopped with SIGTERM by ``close`` (the finally blocks run it, also on Ctrl-C and SIGTERM)."""

    def __init__(self, latency_ms: float, use_uvloop: bool) -> None:
        command = [sys.executable, str(FAKE_UPSTREAM), "--judge", "--port", "0", "--answer-delay-ms", str(latency_ms)]
        if not use_uvloop:
            command.append("--no-uvloop")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            assert self.process.stdout is not None
            line = self.process.stdout.readline()  # "fake upstream listening on http://127.0.0.1:PORT/v1"
            if not line.strip().endswith("/v1"):
                raise RuntimeError(f"the fake judge did not start ({line.strip() or self.process.wait()})")
        except BaseException:
            self.close()
            raise
        self.base_url = line.split()[-1]

    def window(self) -> dict[str, Any]:
        """The fake's calls, the most it had in flight and its CPU seconds since the last window (or its start)."""
        address = urllib.parse.urlsplit(self.base_url)
        connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
        try:
            connection.request("POST", "/bench/stats")
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"the fake judge answered {response.status} to POST /bench/stats")
            stats: dict[str, Any] = json.loads(response.read())
        finally:
            connection.close()
        return stats

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def event_loop() -> str:
    try:
        return f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        return "asyncio"


def run_loop(coroutine: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """As ``medic-gateway worker`` runs: uvloop when installed."""
    if use_uvloop and event_loop() != "asyncio":
        import uvloop

        return uvloop.run(coroutine)
    return asyncio.run(coroutine)


# ------------------------------------------------------------------------------------------------ cef-llm


@dataclass
class LlmRun:
    method: str
    mode: Mode
    samples: int
    concurrency: int  # the backend's calls in flight
    worker_concurrency: int  # batches in flight (1 in the one-by-one run)
    batch_size: int
    wall_s: float
    cpu_s: float  # this process (the client)
    calls: int
    prompt_tokens: int
    completion_tokens: int
    fake_calls: int
    fake_max_in_flight: int
    fake_cpu_s: float
    scored: int

    @property
    def per_second(self) -> float:
        return self.samples / self.wall_s

    @property
    def calls_per_sample(self) -> float:
        return self.calls / self.samples

    @property
    def slot_ms(self) -> float:
        """How long each call held one of the backend's slots, were they all busy all the time (an upper bound)."""
        return 1000 * self.concurrency * self.wall_s / self.calls if self.calls else 0.0

    @property
    def client_cpu_ms_per_call(self) -> float:
        return 1000 * self.cpu_s / self.calls if self.calls else 0.0

    @property
    def fake_cpu_ms_per_call(self) -> float:
        return 1000 * self.fake_cpu_s / self.fake_calls if self.fake_calls else 0.0


async def like_worker(judge: CefLlmJudge, samples: list[Sample], batches_in_flight: int) -> list[list[Result]]:
    """Batches of the judge's batch_size, ``batches_in_flight`` at once under a semaphore (judges.worker)."""
    slots = asyncio.Semaphore(batches_in_flight)

    async def one(batch: list[Sample]) -> list[list[Result]]:
        async with slots:
            return await judge.evaluate(batch)

    size = judge.batch_size
    batches = await asyncio.gather(*(one(samples[i : i + size]) for i in range(0, len(samples), size)))
    return [results for batch in batches for results in batch]


async def one_by_one(judge: CefLlmJudge, samples: list[Sample]) -> list[list[Result]]:
    return [(await judge.evaluate([sample]))[0] for sample in samples]


async def measure_llm(fake: FakeProcess, batched: bool, mode: Mode, samples: list[Sample], warmup: list[Sample],
                      concurrency: int, worker_concurrency: int) -> LlmRun:  # fmt: skip
    config = JudgeLLMConfig(model="judge", base_url=fake.base_url, concurrency=concurrency)
    backend = open_backend(config)
    if not isinstance(backend, HttpBackend):
        raise RuntimeError("expected the HTTP backend")
    judge = CefLlmJudge(backend, batched=batched)
    try:
        evaluate = one_by_one(judge, warmup) if mode == "one by one" else like_worker(judge, warmup, worker_concurrency)
        await evaluate
        backend.usage = Usage()
        fake.window()
        wall, cpu = time.perf_counter(), time.process_time()
        if mode == "one by one":
            per_sample = await one_by_one(judge, samples)
        else:
            per_sample = await like_worker(judge, samples, worker_concurrency)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stats = fake.window()
    finally:
        await backend.close()
    usage = backend.usage
    return LlmRun(judge.name, mode, len(samples), concurrency, worker_concurrency if mode == "concurrent" else 1,
                  judge.batch_size, wall, cpu, usage.calls, usage.prompt_tokens, usage.completion_tokens,
                  stats["calls"], stats["max_in_flight"], stats["cpu_s"], scored(per_sample))  # fmt: skip


# ------------------------------------------------------------------------------------------------ report


def ratio(runs: list[LlmRun], run: LlmRun) -> float | None:
    base = next((r for r in runs if r.method == run.method and r.mode == "one by one"), None)
    return run.per_second / base.per_second if base is not None and run.mode == "concurrent" else None


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(lite: LiteRun, runs: list[LlmRun]) -> list[str]:
    lines = [
        "| method | mode | samples | samples/s | concurrent / one by one | LLM calls/sample "
        "| tokens/sample (prompt + completion) | most in flight at the fake | client CPU | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
        f"| cef-lite | 1 process, 1 thread, CPU {lite.cpu} | {lite.samples} | {lite.per_second:,.1f} | | 0 | 0 | "
        f"| {lite.cpu_ms_per_sample:.1f} ms/sample | >= {LITE_TARGET:.0f}/s/core: "
        f"{verdict(lite.per_second >= LITE_TARGET)} |",
    ]
    for run in runs:
        r = ratio(runs, run)
        tokens = f"{run.prompt_tokens / run.samples:,.0f} + {run.completion_tokens / run.samples:,.0f}"
        mode = f"{run.mode} ({run.concurrency} call{'s' if run.concurrency > 1 else ''} in flight" + (
            f", {run.worker_concurrency} batches of {run.batch_size})" if run.mode == "concurrent" else ")"
        )
        target = f">= {RATIO_TARGET:.0f}x: {verdict(r >= RATIO_TARGET)}" if r is not None else ""
        lines.append(
            f"| {run.method} | {mode} | {run.samples} | {run.per_second:,.2f} | {f'{r:,.1f}x' if r else ''} "
            f"| {run.calls_per_sample:.1f} | {tokens} | {run.fake_max_in_flight} "
            f"| {run.client_cpu_ms_per_call:.2f} ms/call | {target} |"
        )
    return lines


def notes(lite: LiteRun, runs: list[LlmRun], latency_ms: float) -> list[str]:
    out = [
        f"- cef-lite: {lite.wall_s:.2f} s wall, {lite.cpu_s:.2f} s CPU for {lite.samples} samples after "
        f"{lite.warmup} warm-up samples; CPU-bound rate {lite.samples / lite.cpu_s:,.1f} samples/CPU-s; "
        f"{lite.scored}/{lite.samples} scored.",
        "- Tokens are the fake judge's counts, which are words (whitespace-separated), not model tokens.",
    ]
    for run in runs:
        calls = run.calls_per_sample
        ceiling = run.concurrency / (latency_ms / 1000 * calls) if calls else 0.0
        out.append(
            f"- {run.method}, {run.mode}: {run.wall_s:.2f} s wall; {run.scored}/{run.samples} scored; client CPU "
            f"{run.cpu_s:.2f} s ({100 * run.cpu_s / run.wall_s:.0f} % of one core); fake CPU "
            f"{run.fake_cpu_ms_per_call:.2f} ms/call ({100 * run.fake_cpu_s / run.wall_s:.0f} % of one core); "
            f"ceiling at {run.concurrency} calls x {latency_ms:g} ms: {ceiling:,.2f} samples/s; "
            f"{run.concurrency} slots x wall / calls = {run.slot_ms:.1f} ms per call."
        )
    return out


def describe(pairs: list[Pair]) -> str:
    words = [len(p.source.split()) for p in pairs]
    candidates = [len(p.candidate.split()) for p in pairs]
    return (
        f"{len(pairs)} distinct samples from {CITATION}: source {statistics.mean(words):.0f} words on average "
        f"({min(words)}-{max(words)}), {statistics.mean(p.notes for p in pairs):.1f} notes joined; candidate "
        f"{statistics.mean(candidates):.0f} words."
    )


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), model)
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


# ------------------------------------------------------------------------------------------------ main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--samples", type=int, help="samples per concurrent cef-llm run (default 200; --quick 24)")
    p.add_argument("--serial-samples", type=int, help="samples per one-by-one run (default 5; --quick 2)")
    p.add_argument("--lite-samples", type=int, help="cef-lite samples (default 200; --quick 40)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="the fake judge's latency per call (default 50)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight in the concurrent runs (default 64)")
    p.add_argument("--worker-concurrency", type=int, default=4, help="batches in flight at once (default 4)")
    p.add_argument("--min-words", type=int, default=300, help="words per source at least (default 300)")
    p.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    p.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop in the client and the fake")
    p.add_argument("--json", metavar="FILE", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)
    quick = args.quick
    args.samples = args.samples or (24 if quick else 200)
    args.serial_samples = args.serial_samples or (2 if quick else 5)
    args.lite_samples = args.lite_samples or (40 if quick else 200)
    return args


def run_llm(args: argparse.Namespace, samples: list[Sample]) -> list[LlmRun]:
    """The four cef-llm runs against one fake judge process, which is stopped whatever happens."""
    serial, concurrent = samples[: args.serial_samples], samples[: args.samples]
    warmup = samples[args.samples : args.samples + CefLlmJudge.batch_size * args.worker_concurrency]
    use_uvloop = not args.no_uvloop
    fake = FakeProcess(args.latency_ms, use_uvloop)
    try:
        runs = []
        for batched in (False, True):
            one = measure_llm(fake, batched, "one by one", serial, warmup[:1], 1, 1)
            runs.append(run_loop(one, use_uvloop))
            many = measure_llm(fake, batched, "concurrent", concurrent, warmup, args.concurrency,
                               args.worker_concurrency)  # fmt: skip
            runs.append(run_loop(many, use_uvloop))
        return runs
    finally:
        fake.close()


def report(args: argparse.Namespace, argv: list[str], pairs: list[Pair], lite: LiteRun, runs: list[LlmRun]) -> None:
    loop = event_loop() if not args.no_uvloop else "asyncio"
    print(f"`{shlex.join(argv)}`\n")
    print(f"{machine()}; event loop {loop} (client and fake); fake judge {args.latency_ms:g} ms per call, in its "
          f"own process.\n")  # fmt: skip
    print(describe(pairs) + "\n")
    print("\n".join(table(lite, runs)) + "\n")
    print("\n".join(notes(lite, runs, args.latency_ms)))
    if args.json is not None:
        document = {
            "command": shlex.join(argv), "machine": machine(), "event_loop": loop, "latency_ms": args.latency_ms,
            "data": describe(pairs), "min_words": args.min_words,
            "targets": {"cef_lite_samples_per_s_per_core": LITE_TARGET, "concurrent_over_one_by_one": RATIO_TARGET},
            "cef_lite": {**asdict(lite), "samples_per_s": lite.per_second, "cpu_ms_per_sample": lite.cpu_ms_per_sample},
            "cef_llm": [{**asdict(r), "samples_per_s": r.per_second, "calls_per_sample": r.calls_per_sample,
                         "client_cpu_ms_per_call": r.client_cpu_ms_per_call, "ratio": ratio(runs, r),
                         "slot_ms": r.slot_ms, "fake_cpu_ms_per_call": r.fake_cpu_ms_per_call} for r in runs],
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks, which stop the fake judge


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not DATA.is_file():
        print(f"MEDEC data not found at {DATA}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    count = max(LITE_WARMUP + args.lite_samples, args.samples + CefLlmJudge.batch_size * args.worker_concurrency)
    pairs = build_pairs(read_notes(DATA), count, args.min_words)
    samples = [to_sample(i, pair) for i, pair in enumerate(pairs)]
    lite = measure_lite(samples[LITE_WARMUP : LITE_WARMUP + args.lite_samples], samples[:LITE_WARMUP])
    runs = run_llm(args, samples)
    report(args, sys.orig_argv if argv is None else argv, pairs, lite, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
