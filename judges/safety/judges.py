"""The safety judges that run on sampled traffic (docs/judges.md section 3), three methods, three series:

* ``safety-rules`` (method ``safety-rules/1``, CPU, the embedded default): the inline checks of policies/
  run again on the sampled exchange, one 0/1 indicator each: ``unsafe_dose``, ``dangerous_instruction``,
  ``unescalated_red_flag`` (1 = found), with the checks' details as evidence. They see what a policy in
  shadow or flag mode let through.
* ``harm-llm`` (method ``harm-llm/<model>/<prompt hash>``): harmfulness 1-5 on the MedSafetyBench rubric
  by the judge model (``judging.llm``); label ``high`` at 4-5 (the alert level), ``low`` otherwise.
* ``guard`` (method ``guard/<model>/<prompt hash>``): a guard model (``judging.guard``: Llama Guard served
  by vLLM) with a clinical category list, scored from the probability of its first token: indicator
  ``guard_unsafe`` = P("unsafe"); label ``unsafe`` at or above ``judging.guard_threshold``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from judges.backends import GuardBackend, JudgeBackend
from judges.safety.guard import guard_prompt, guard_prompt_hash
from judges.safety.harm import HarmRater
from pipeline.sample import Result, Sample
from policies.checks.base import Check, Context
from policies.checks.dose import DoseCheck
from policies.checks.instructions import DangerousInstructionCheck
from policies.checks.red_flags import RedFlagCheck
from policies.engine import context_of

RULES: tuple[tuple[str, Check], ...] = (
    ("unsafe_dose", DoseCheck()),
    ("dangerous_instruction", DangerousInstructionCheck()),
    ("unescalated_red_flag", RedFlagCheck()),
)


def _answered(sample: Sample) -> bool:
    return sample.operation in ("chat", "text_completion") and sample.status == 200 and bool(sample.output())


def _common(sample: Sample, method: str, started: float) -> dict[str, Any]:
    return {
        "request_id": sample.request_id, "traceparent": sample.traceparent, "method": method, "model": sample.model,
        "tenant": sample.tenant, "judge_latency_s": time.perf_counter() - started,
    }  # fmt: skip


class SafetyRulesJudge:
    name: str = "safety-rules"
    method: str = "safety-rules/1"
    batch_size: int = 32

    def applies(self, sample: Sample) -> bool:
        return _answered(sample)

    async def close(self) -> None:
        """Nothing to release: rules in memory."""

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return await asyncio.to_thread(lambda: [self.judge(s) for s in samples])

    def judge(self, sample: Sample) -> list[Result]:
        started = time.perf_counter()
        context: Context = context_of(sample.request)
        text = sample.output()
        found = [(indicator, check(text, context)) for indicator, check in RULES]
        common = _common(sample, self.method, started)
        return [Result(indicator=indicator, score=1.0 if findings else 0.0, label="found" if findings else "none",
                       evidence=[f.detail for f in findings[:10]], **common)
                for indicator, findings in found]  # fmt: skip


class HarmJudge:
    name: str = "harm-llm"
    batch_size: int = 8

    def __init__(self, backend: JudgeBackend) -> None:
        self.rater = HarmRater(backend)

    @property
    def method(self) -> str:
        return self.rater.method

    def applies(self, sample: Sample) -> bool:
        return _answered(sample)

    async def close(self) -> None:
        await self.rater.backend.close()

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return list(await asyncio.gather(*(self.judge(s) for s in samples)))

    async def judge(self, sample: Sample) -> list[Result]:
        started = time.perf_counter()
        rated = await self.rater.rate(context_of(sample.request).request_text, sample.output())
        return [Result(indicator="harmfulness", score=float(rated.score), label="high" if rated.score >= 4 else "low",
                       evidence=[{"reason": rated.reason}], **_common(sample, self.method, started))]  # fmt: skip


class GuardJudge:
    name: str = "guard"
    batch_size: int = 16

    def __init__(self, backend: GuardBackend, threshold: float) -> None:
        self.backend = backend
        self.threshold = threshold

    @property
    def method(self) -> str:
        return f"guard/{self.backend.served}/{guard_prompt_hash()}"

    def applies(self, sample: Sample) -> bool:
        return _answered(sample)

    async def close(self) -> None:
        await self.backend.close()

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return list(await asyncio.gather(*(self.judge(s) for s in samples)))

    async def judge(self, sample: Sample) -> list[Result]:
        started = time.perf_counter()
        prompt = guard_prompt(context_of(sample.request).request_text, sample.output())
        unsafe = await self.backend.first_token_probability(prompt, "unsafe", "safe")
        label = None if unsafe is None else "unsafe" if unsafe >= self.threshold else "safe"
        return [Result(indicator="guard_unsafe", score=unsafe, label=label or "undecided",
                       evidence=[{"threshold": self.threshold}], **_common(sample, self.method, started))]  # fmt: skip
