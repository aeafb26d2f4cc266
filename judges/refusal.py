"""Judge ``refusal``: the refusal rules (text/refusal.py; docs/judges.md section 3) on every sampled answer."""

from __future__ import annotations

import time
from typing import Any

from pipeline.sample import Result, Sample
from text.refusal import classify, word_count

OPERATIONS = frozenset({"chat", "text_completion"})
SCORES = {"refused": 1.0, "partial": 0.5, "answered": 0.0}


class RefusalJudge:
    """Judge "refusal": per sample, a "refusal" result and a "response_length" result (words in the output).

    Applies to chat and text completions answered with status 200 and a non-empty output. The refusal score
    is 1.0 refused, 0.5 partial (a refusal alongside substantial help), 0.0 answered; evidence lists the
    matched phrases with their offsets in the output, never the output itself.
    """

    name: str = "refusal"
    method: str = "refusal-rules/1"
    batch_size: int = 64

    def applies(self, sample: Sample) -> bool:
        return sample.operation in OPERATIONS and sample.status == 200 and sample.output().strip() != ""

    async def close(self) -> None:
        """Nothing to release: rules in memory."""

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return [self.judge(sample) for sample in samples]

    def judge(self, sample: Sample) -> list[Result]:
        """The two results for one sample (synchronous: pure CPU, microseconds)."""
        started = time.perf_counter()
        text = sample.output()
        words = word_count(text)
        verdict = classify(text, words)
        latency = time.perf_counter() - started
        common: dict[str, Any] = {
            "request_id": sample.request_id,
            "traceparent": sample.traceparent,
            "method": self.method,
            "model": sample.model,
            "tenant": sample.tenant,
            "judge_latency_s": latency,
        }
        evidence = [m.evidence(text) for m in verdict.matches]
        return [
            Result(indicator="refusal", score=SCORES[verdict.label], label=verdict.label, evidence=evidence, **common),
            Result(indicator="response_length", score=float(words), label=None, evidence=[], **common),
        ]
