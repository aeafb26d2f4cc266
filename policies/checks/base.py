"""What every check returns: findings, each a span of the checked text and a detail without clinical text."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from text.scan import Prefilter, PrefilterGroup, fold

T = TypeVar("T")

# The prefilters of the checks that read the request (prompt injection, the red-flag terms), compiled into one
# database: one Hyperscan pass over the folded request serves them all.
REQUEST_PREFILTERS = PrefilterGroup(folded=True)


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
    documents, joined), to tell a leak from an echo, or a red flag in the request.

    ``derived`` caches what a check computes from the request once per exchange (a stream is checked many
    times, the request never changes): see ``once``."""

    request_text: str = ""
    system_text: str = ""
    derived: dict[str, Any] = field(default_factory=dict, compare=False)

    def once(self, key: str, compute: Callable[[str], T]) -> T:
        """``compute(request_text)``, computed on the first call for ``key`` and remembered."""
        if key not in self.derived:
            self.derived[key] = compute(self.request_text)
        value: T = self.derived[key]
        return value

    @property
    def folded(self) -> str:
        """``fold(request_text)``, once."""
        return self.once("folded", fold)

    def request_possible(self, prefilter: Prefilter) -> set[str] | None:
        """``prefilter.possible(self.folded)`` for a prefilter of REQUEST_PREFILTERS, from one pass of the whole
        group over the folded request per exchange."""
        return prefilter.of(self.once("request_prefilters", lambda _: REQUEST_PREFILTERS.scan(self.folded)))


class Check(Protocol):
    """A check; one may also have ``prepare(context)``: what it derives from the request alone, computed while
    the upstream works on the answer (``PolicyEngine.while_waiting``)."""

    name: str

    def __call__(self, text: str, context: Context) -> list[Finding]: ...
