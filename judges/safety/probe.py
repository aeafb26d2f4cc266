"""The safety probe (``medic-gateway probe safety``, and ``probes.safety`` on a schedule): the passive safety of
a model (docs/judges.md section 3).

Harmful medical requests (MedSafetyBench) and benign clinical requests (PubMedQA-L questions, asked plainly;
``judges.safety.datasets``) are drawn, ``n`` of each with a seed, and each is sent once as a single user turn
through the configuration's upstream path (``upstreams.client.ModelClient``, tagged ``x-medic-probe: safety``).
Every answer is labelled by the refusal rules (``text.refusal``): refused, partial or answered. With a judge
model every answer is also rated 1-5 on the MedSafetyBench rubric (``judges.safety.harm``); benign answers too,
reported apart: one judge call per request, as cheap as the probe's own call, and it catches a harmful answer
to an innocent question. The round's report: ``judges.safety.score``.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from config import GatewayConfig, JudgeLLMConfig
from judges.backends import JudgeUnavailable, open_backend
from judges.limiter import Limiter
from judges.safety.datasets import Request
from judges.safety.harm import HarmOutputError, HarmRater
from judges.safety.score import Outcome, SafetyReport, summarise
from text.refusal import classify
from upstreams.client import Completion, ModelClient


@dataclass
class SafetySettings:
    n: int = 100  # requests drawn of each kind; 0: all
    seed: int = 0  # the draw and the bootstrap
    concurrency: int = 8
    max_rps: float = 10.0
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters, the same for every request
    sources: dict[str, str] = field(default_factory=dict)  # where the requests came from, for the report


def draw(requests: list[Request], n: int, rng: random.Random) -> list[Request]:
    """``n`` of the requests drawn without replacement (all of them when n is 0 or more than there are)."""
    return rng.sample(requests, n) if 0 < n < len(requests) else list(requests)


async def probe_model(config: GatewayConfig, model: str, harmful: list[Request], benign: list[Request],
                      probe: SafetySettings, judge: JudgeLLMConfig | None = None) -> SafetyReport:  # fmt: skip
    """One round: a seeded draw of ``probe.n`` requests of each kind, each asked once through the
    configuration's upstream path (tagged ``x-medic-probe: safety``), labelled and, with a judge, rated."""
    rng = random.Random(probe.seed)
    chosen = draw(harmful, probe.n, rng) + draw(benign, probe.n, rng)
    client = ModelClient(config, "safety")
    backend = open_backend(judge) if judge is not None else None
    rater = HarmRater(backend) if backend is not None else None
    await client.start()
    try:
        outcomes = await ask_all(client, model, chosen, probe, rater)
    finally:
        await client.close()
        if backend is not None:
            await backend.close()
    details = {"seed": probe.seed, "n": probe.n, "params": probe.params, "concurrency": probe.concurrency,
               "max_rps": probe.max_rps, "sources": probe.sources}  # fmt: skip
    return summarise(model, outcomes, probe.seed, details, rater.method if rater is not None else None)


async def ask_all(client: ModelClient, model: str, requests: list[Request], probe: SafetySettings,
                  rater: HarmRater | None) -> list[Outcome]:  # fmt: skip
    """Every request once, ``probe.concurrency`` at once and at most ``probe.max_rps`` starts a second."""
    limiter = Limiter(probe.concurrency, probe.max_rps)

    async def one(request: Request) -> Outcome:
        messages = [{"role": "user", "content": request.text}]
        completion: Completion = await limiter.run(client.chat(model, messages, **probe.params))
        return await judge_answer(request, completion, rater)

    return list(await asyncio.gather(*(one(request) for request in requests)))


async def judge_answer(request: Request, completion: Completion, rater: HarmRater | None) -> Outcome:
    """The outcome of one answer: its refusal label and, with a rater, its harmfulness."""
    text = completion.text
    if text is None or not text.strip():
        return Outcome(request, text, completion.model)
    label = classify(text).label
    if rater is None:
        return Outcome(request, text, completion.model, label)
    try:
        rated = await rater.rate(request.text, text)
    except (JudgeUnavailable, HarmOutputError):
        return Outcome(request, text, completion.model, label, judge_failed=True)
    return Outcome(request, text, completion.model, label, rated.score)
