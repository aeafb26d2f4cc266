"""The judges a worker or the evaluate command can run, by name.

"fidelity" stands for the best fidelity judge the configuration allows: ``cef-llm`` when a judge model is
configured (``judging.llm``), else the CPU judge ``cef-lite``.
"""

from __future__ import annotations

from collections.abc import Callable

from config import GatewayConfig, JudgingConfig
from judges.backends import HttpBackend, open_backend
from judges.fidelity.cascade import CefCascadeJudge
from judges.fidelity.lite import CefLiteJudge
from judges.fidelity.llm import CefLlmJudge
from judges.judge import Judge
from judges.refusal import RefusalJudge
from judges.safety.guard import UnknownGuardModel, family_of
from judges.safety.judges import GuardJudge, HarmJudge, SafetyRulesJudge
from judges.sycophancy.live import JudgeModelComparison, LiveSycophancyJudge

Factory = Callable[[JudgingConfig, GatewayConfig | None], Judge]


class UnknownJudgeError(ValueError):
    """A judge name that is not in JUDGES, or one the configuration cannot run; the message says why."""


def _cef_llm(batched: bool) -> Factory:
    def build_llm_judge(config: JudgingConfig, _: GatewayConfig | None) -> Judge:
        if config.llm is None:
            name = "cef-llm-batch" if batched else "cef-llm"
            raise UnknownJudgeError(f"judge {name!r} needs a judge model: set judging.llm in the configuration")
        second = [open_backend(c) for c in config.stability.judges]
        return CefLlmJudge(open_backend(config.llm), batched, second, config.stability.share)

    return build_llm_judge


def _fidelity(config: JudgingConfig, gateway: GatewayConfig | None) -> Judge:
    return _cef_llm(False)(config, gateway) if config.llm is not None else CefLiteJudge()


def _cef_cascade(config: JudgingConfig, _: GatewayConfig | None) -> Judge:
    if config.llm is None:
        raise UnknownJudgeError("judge 'cef-cascade' needs a judge model: set judging.llm in the configuration")
    return CefCascadeJudge(open_backend(config.llm))


def _harm_llm(config: JudgingConfig, _: GatewayConfig | None) -> Judge:
    if config.llm is None:
        raise UnknownJudgeError("judge 'harm-llm' needs a judge model: set judging.llm in the configuration")
    return HarmJudge(open_backend(config.llm))


def _guard(config: JudgingConfig, _: GatewayConfig | None) -> Judge:
    if config.guard is None:
        raise UnknownJudgeError("judge 'guard' needs a guard model: set judging.guard in the configuration")
    try:
        family_of(config.guard.model, config.guard_family)
    except UnknownGuardModel as error:
        raise UnknownJudgeError(str(error)) from None
    return GuardJudge(HttpBackend(config.guard), config.guard_threshold)


def _sycophancy_live(config: JudgingConfig, gateway: GatewayConfig | None) -> Judge:
    if gateway is None:
        raise UnknownJudgeError("judge 'sycophancy-live' re-asks the model: it needs the gateway configuration")
    comparator = JudgeModelComparison(open_backend(config.llm)) if config.llm is not None else None
    return LiveSycophancyJudge(gateway, config.sycophancy_live, comparator)


JUDGES: dict[str, Factory] = {
    "refusal": lambda _, __: RefusalJudge(),
    "cef-lite": lambda _, __: CefLiteJudge(),
    "cef-llm": _cef_llm(False),
    "cef-llm-batch": _cef_llm(True),
    "cef-cascade": _cef_cascade,
    "fidelity": _fidelity,
    "sycophancy-live": _sycophancy_live,
    "safety-rules": lambda _, __: SafetyRulesJudge(),
    "harm-llm": _harm_llm,
    "guard": _guard,
}


def build(
    names: list[str], config: JudgingConfig | None = None, gateway: GatewayConfig | None = None, embedded: bool = False
) -> list[Judge]:
    """One new judge per name, in order; raises UnknownJudgeError naming every unknown and every known name,
    or the setting a judge needs. ``gateway`` is the whole configuration, for judges that call models;
    ``embedded``: the judges run inside the gateway, so CPU-heavy ones get a process of their own."""
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise UnknownJudgeError(f"unknown judge {', '.join(map(repr, unknown))}; known: {', '.join(sorted(JUDGES))}")
    config = config or JudgingConfig()
    judges = [JUDGES[name](config, gateway) for name in names]
    for judge in judges:
        if embedded and isinstance(judge, CefLiteJudge):
            judge.processes = 1
    return judges
