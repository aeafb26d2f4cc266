"""What a judge is: it says which samples it applies to and turns samples into results."""

from __future__ import annotations

from typing import Any, Protocol

from pipeline.sample import Result, Sample


class Judge(Protocol):
    name: str  # registry key, e.g. "refusal"
    batch_size: int  # 1: one sample per call; more: the worker gathers up to this many

    @property
    def method(self) -> str:
        """Method and version as recorded in results, e.g. "refusal-rules/1"; a model-backed judge's names the
        model as served now, so it may change while the judge runs."""
        ...

    def applies(self, sample: Sample) -> bool: ...

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        """One list of results per sample, in order. Raising fails the whole batch (it is retried)."""
        ...

    async def close(self) -> None:
        """Releases what the judge holds (connection pools, engines); called once, when the worker stops."""
        ...


def uncertain(evidence: list[Any]) -> int:
    """How many of a result's evidence records are findings the judge was unsure of (``"certain": false``): listed
    for a reader, counted in no score."""
    return sum(1 for item in evidence if isinstance(item, dict) and item.get("certain") is False)
