"""``policies``: the packs the inline guard loads, and where its decisions are audited."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from config.base import Strict


class PoliciesConfig(Strict):
    packs: list[str] = ["clinical-default"]  # built-in pack names or pack files; [] for none
    audit_path: str | None = "medic-audit.jsonl"  # append-only JSON lines; null: no audit file
    stream_window_chars: Annotated[int, Field(ge=1, le=100_000)] = 200
    # What of a blocked stream never leaves: "finding" (its span: text before it leaves as it arrives) or
    # "sentence" (the whole sentence it is in: every sentence is held until it ends, at the cost of latency)
    stream_hold: Literal["finding", "sentence"] = "finding"
    monitor_every_s: Annotated[float, Field(gt=0)] = 30.0  # how often results rules are evaluated
    # A blocked complete answer: "filtered" (200, every choice withheld with finish_reason content_filter, as Azure
    # OpenAI's content filter answers and as a blocked stream ends) or "error" (OpenAI's 400 error instead)
    blocked_answer: Literal["filtered", "error"] = "filtered"
