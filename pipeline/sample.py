"""The wire contract between the gateway and the judges: a sampled exchange and a judge's result.

A Sample is what the gateway enqueues (JSON, one per queue entry). Its clinical text has already been
pseudonymised (or encrypted) by the gateway, according to ``privacy``. A Result is what a judge returns:
the schema of docs/judges.md (score or null, label, evidence, method and version, request id).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocol.tasks import Task

SAMPLE_VERSION = 1
Privacy = Literal["raw", "pseudonymised", "encrypted"]
Trigger = Literal["rate", "header", "policy", "probe"]
# What the exchange asks of the model, as the client states it: rewrite a supplied source (summarise, write a
# note, translate, extract), answer over supplied context, or answer an open question with no source.


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = 0
    content: str = ""
    finish_reason: str | None = None


class Response(BaseModel):
    model_config = ConfigDict(extra="allow")

    choices: list[Choice] = []
    usage: dict[str, Any] | None = None
    model: str | None = None


class Timings(BaseModel):
    duration_s: float | None = None
    upstream_s: float | None = None
    first_token_s: float | None = None


class Sample(BaseModel):
    """One sampled exchange: the request, the full response (assembled when streamed) and metadata."""

    model_config = ConfigDict(extra="forbid")

    version: int = SAMPLE_VERSION
    request_id: str
    traceparent: str | None = None  # W3C trace context of the evaluated request's span
    created_at: float = Field(default_factory=time.time)
    operation: str = "chat"
    task: Task | None = None  # stated by the x-medic-task header or the model's configuration; None: judges infer it
    model: str
    upstream: str = ""
    upstream_model: str = ""
    provider: str = ""
    tenant: str = "default"
    stream: bool = False
    status: int = 200
    error_type: str | None = None
    trigger: Trigger = "rate"
    privacy: Privacy = "pseudonymised"
    policy: list[dict[str, Any]] = []  # decisions of inline policies, when any ran
    timings: Timings = Timings()
    request: dict[str, Any] = {}  # the OpenAI request body (pseudonymised); {} when encrypted
    response: Response = Response()  # empty when encrypted
    ciphertext: str | None = None  # privacy "encrypted": Fernet token of {"request", "response"}

    def messages(self) -> list[dict[str, Any]]:
        messages = self.request.get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    def output(self) -> str:
        """The first choice's text, which is what most judges evaluate."""
        return self.response.choices[0].content if self.response.choices else ""


class Result(BaseModel):
    """One indicator computed for one sample by one judge method."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    traceparent: str | None = None
    indicator: str
    score: float | None  # null when the indicator does not apply: never a made-up value
    label: str | None = None
    evidence: list[Any] = []
    method: str  # e.g. "refusal-rules/1", "cef-llm/<judge-model>/<prompt-hash>"
    model: str
    tenant: str = "default"
    created_at: float = Field(default_factory=time.time)
    judge_latency_s: float | None = None
