"""The checks policy rules can name, each instantiated once (checks keep no state between calls)."""

from __future__ import annotations

from policies.checks.base import Check
from policies.checks.phi import PhiLeak
from policies.checks.refusal import Refusal


def all_checks() -> dict[str, Check]:
    checks: list[Check] = [PhiLeak(), Refusal()]
    return {check.name: check for check in checks}
