"""The judges a worker or the evaluate command can run, by name."""

from __future__ import annotations

from collections.abc import Callable

from judges.judge import Judge
from judges.refusal import RefusalJudge

JUDGES: dict[str, Callable[[], Judge]] = {
    "refusal": RefusalJudge,
}


class UnknownJudgeError(ValueError):
    """A judge name that is not in JUDGES; the message lists the known names."""


def build(names: list[str]) -> list[Judge]:
    """One new judge per name, in order; raises UnknownJudgeError naming every unknown and every known name."""
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise UnknownJudgeError(f"unknown judge {', '.join(map(repr, unknown))}; known: {', '.join(sorted(JUDGES))}")
    return [JUDGES[name]() for name in names]
