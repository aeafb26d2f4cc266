"""The judges' part of the configuration (``judging:`` in the YAML file; docs/configuration.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from judges.fidelity.backends import JudgeLLMConfig


class StabilityConfig(BaseModel):
    """Second judges that answer the primary judge's questions on a share of samples (judges.md 1.6)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judges: list[JudgeLLMConfig] = []
    share: float = Field(default=0.05, ge=0.0, le=1.0)


class JudgingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: JudgeLLMConfig | None = None  # the judge model of the LLM judges; none: the CPU judges only
    stability: StabilityConfig = StabilityConfig()
