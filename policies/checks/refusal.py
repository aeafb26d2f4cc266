"""``refusal``: the answer refuses (the rules of text/refusal.py), e.g. to flag over-refusal of clinical requests."""

from __future__ import annotations

from policies.checks.base import Context, Finding
from text.refusal import classify


class Refusal:
    name = "refusal"

    def __call__(self, text: str, context: Context) -> list[Finding]:
        verdict = classify(text)
        if verdict.label == "answered":
            return []
        return [Finding(self.name, 0, len(text), {"label": verdict.label})]
