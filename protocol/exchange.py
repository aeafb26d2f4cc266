"""One request and its response as the gateway saw them: what metrics, traces and samples are made of.

It holds no clinical text except the assembled stream content, which stays in memory for the sampler
and is never logged or exported by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from protocol.tasks import Task


@dataclass(slots=True)
class Exchange:
    request_id: str
    operation: str
    tenant: str
    started: float = field(default_factory=perf_counter)
    model: str = ""
    task: Task | None = None  # from the x-medic-task header, else the model's configuration; None: not stated
    stream: bool = False
    upstream: str = ""
    provider: str = ""
    upstream_model: str = ""
    response_model: str | None = None
    status: int = 0
    error_type: str | None = None
    attempts: int = 0
    upstream_wait_s: float = 0.0
    first_token_s: float | None = None
    finished_s: float | None = None
    usage: dict[str, Any] | None = None
    finish_reasons: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)  # the response text per choice: PHI, kept in memory only
    disconnected: bool = False
    payload: dict[str, Any] | None = None  # the parsed request body: PHI, kept in memory only
    traceparent: str | None = None  # the W3C trace context of this request's span, for the judges' events
    policy_flagged: bool = False
    policy: list[dict[str, Any]] = field(default_factory=list)  # decisions of policy rules (no PHI in them)
    policy_context: object = None  # what policy checks derive from the request, shared by the stages: PHI
    policy_asked: bool = False  # the request stage's flag, allow and shadow rules have run
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # response headers policies add

    def elapsed(self) -> float:
        return perf_counter() - self.started

    def tokens(self) -> tuple[int | None, int | None]:
        """(input, output) tokens from the upstream's usage, under either protocol's names."""
        usage = self.usage or {}
        inp = usage.get("prompt_tokens", usage.get("input_tokens"))
        out = usage.get("completion_tokens", usage.get("output_tokens"))
        return (inp if isinstance(inp, int) else None, out if isinstance(out, int) else None)
