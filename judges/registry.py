"""The judges a worker or the evaluate command can run, by name.

"fidelity" stands for the best fidelity judge the configuration allows: ``cef-llm`` when a judge model is
configured (``judging.llm``), else the CPU judge ``cef-lite``.
"""

from __future__ import annotations

from collections.abc import Callable

from judges.config import JudgingConfig
from judges.fidelity.backends import open_backend
from judges.fidelity.lite import CefLiteJudge
from judges.fidelity.llm import CefLlmJudge
from judges.judge import Judge
from judges.refusal import RefusalJudge


class UnknownJudgeError(ValueError):
    """A judge name that is not in JUDGES, or one the configuration cannot run; the message says why."""


def _cef_llm(batched: bool) -> Callable[[JudgingConfig], Judge]:
    def build_llm_judge(config: JudgingConfig) -> Judge:
        if config.llm is None:
            name = "cef-llm-batch" if batched else "cef-llm"
            raise UnknownJudgeError(f"judge {name!r} needs a judge model: set judging.llm in the configuration")
        second = [open_backend(c) for c in config.stability.judges]
        return CefLlmJudge(open_backend(config.llm), batched, second, config.stability.share)

    return build_llm_judge


def _fidelity(config: JudgingConfig) -> Judge:
    return _cef_llm(False)(config) if config.llm is not None else CefLiteJudge()


JUDGES: dict[str, Callable[[JudgingConfig], Judge]] = {
    "refusal": lambda _: RefusalJudge(),
    "cef-lite": lambda _: CefLiteJudge(),
    "cef-llm": _cef_llm(False),
    "cef-llm-batch": _cef_llm(True),
    "fidelity": _fidelity,
}


def build(names: list[str], config: JudgingConfig | None = None) -> list[Judge]:
    """One new judge per name, in order; raises UnknownJudgeError naming every unknown and every known name,
    or the setting a judge needs."""
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise UnknownJudgeError(f"unknown judge {', '.join(map(repr, unknown))}; known: {', '.join(sorted(JUDGES))}")
    config = config or JudgingConfig()
    return [JUDGES[name](config) for name in names]
