"""The checks policy rules can name, each instantiated once (checks keep no state between calls)."""

from __future__ import annotations

from policies.checks.base import REQUEST_PREFILTERS, Check
from policies.checks.dose import DoseCheck
from policies.checks.injection import PromptInjectionCheck
from policies.checks.instructions import DangerousInstructionCheck
from policies.checks.phi import PhiLeak
from policies.checks.red_flags import RedFlagCheck
from policies.checks.refusal import Refusal
from text.scan import TEXT_PREFILTERS


def all_checks() -> dict[str, Check]:
    checks: list[Check] = [DoseCheck(), DangerousInstructionCheck(), RedFlagCheck(), PromptInjectionCheck(),
                           PhiLeak(), Refusal()]  # fmt: skip
    # Every check that shares the request's pass or the answer's has joined: compiled now, not on the first request.
    REQUEST_PREFILTERS.compile()
    TEXT_PREFILTERS.compile()
    return {check.name: check for check in checks}
