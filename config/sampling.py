"""``sampling``: which exchanges are judged, how fast, and how they are protected before they are queued."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from config.base import Strict


class SampleRate(Strict):
    """A sampling rate for the requests that match every key given (the most specific match wins)."""

    model: str | None = None
    upstream: str | None = None
    tenant: str | None = None
    rate: Annotated[float, Field(ge=0, le=1)]


class SamplingConfig(Strict):
    rate: Annotated[float, Field(ge=0, le=1)] = 0.1
    rates: list[SampleRate] = []
    debug_header: str | None = None  # e.g. "x-medic-sample": a request with "x-medic-sample: 1" is always sampled
    max_samples_per_s: Annotated[float, Field(gt=0)] = 200.0
    buffer_size: Annotated[int, Field(gt=0)] = 10_000  # samples held while the queue is slow or down
    when_full: Literal["drop_newest", "drop_oldest"] = "drop_newest"  # which sample a full buffer gives up
    drain_timeout_s: Annotated[float, Field(ge=0)] = 5.0  # on stop: how long the buffer may take to reach the queue
    privacy: Literal["raw", "pseudonymised", "encrypted"] = "pseudonymised"
    encryption_key_env: str | None = None
    encoder: Literal["thread", "process"] = "thread"  # where samples are pseudonymised: see docs/configuration.md

    @model_validator(mode="after")
    def _key_for_encryption(self) -> SamplingConfig:
        if self.privacy == "encrypted" and not self.encryption_key_env:
            raise ValueError("privacy 'encrypted' needs encryption_key_env")
        return self
