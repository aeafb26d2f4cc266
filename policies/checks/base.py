"""What every check returns: findings, each a span of the checked text and a detail without clinical text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found.

    ``start``/``end`` are character offsets into the checked text: the span a blocking rule must never let
    through (on a stream, the gateway stops before ``start``). ``detail`` explains the finding for the audit
    log and metrics and must hold no clinical text: names from the check's own tables (a drug, a rule, a
    pattern id) and numbers, never words copied from the text.
    """

    check: str
    start: int
    end: int
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Context:
    """What a check may need besides the text it checks: the caller's own words (user turns and supplied
    documents, joined), to tell a leak from an echo, or a red flag in the request."""

    request_text: str = ""
    system_text: str = ""


class Check(Protocol):
    name: str

    def __call__(self, text: str, context: Context) -> list[Finding]: ...
