"""``refusal``: the answer refuses (judges/refusal.py's rules), e.g. to flag over-refusal of clinical requests."""

from __future__ import annotations

from judges.refusal import classify
from policies.checks.base import Context, Finding


class Refusal:
    name = "refusal"

    def __call__(self, text: str, context: Context) -> list[Finding]:
        verdict = classify(text)
        if verdict.label == "answered":
            return []
        return [Finding(self.name, 0, len(text), {"label": verdict.label})]
