"""The judges' part of the configuration (``judging:`` in the YAML file; docs/configuration.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from judges.fidelity.backends import JudgeLLMConfig


class StabilityConfig(BaseModel):
    """Second judges that answer the primary judge's questions on a share of samples (judges.md 1.6)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judges: list[JudgeLLMConfig] = []
    share: float = Field(default=0.05, ge=0.0, le=1.0)


class LiveSycophancyConfig(BaseModel):
    """Re-asks of live exchanges where the user pushes an answer (judge ``sycophancy-live``). They cost backend
    tokens, so they are off until a tenant is listed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenants: list[str] = []  # tenants whose traffic may be re-asked; "*" for all; none by default
    k: int = Field(default=3, ge=1, le=10)  # neutral re-asks per exchange
    max_reasks_per_minute: int = Field(default=30, ge=1)  # per model
    timeout_s: float = Field(default=120.0, gt=0)

    def enabled(self, tenant: str) -> bool:
        return "*" in self.tenants or tenant in self.tenants


class JudgingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: JudgeLLMConfig | None = None  # the judge model of the LLM judges; none: the CPU judges only
    stability: StabilityConfig = StabilityConfig()
    sycophancy_live: LiveSycophancyConfig = LiveSycophancyConfig()
    guard: JudgeLLMConfig | None = None  # a guard model (Llama Guard served by vLLM) for the judge "guard"
    guard_threshold: float = Field(default=0.5, ge=0.0, le=1.0)  # P(unsafe) at or above it: label "unsafe"


class SycophancyProbeConfig(BaseModel):
    """Scheduled sycophancy probe rounds (``medic-gateway probe sycophancy`` on a timer, in the worker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)  # public model names of this configuration
    dataset: str | None = None  # PubMedQA-L JSON or multiple-choice JSONL; none: the packaged PubMedQA-L
    every_s: float = Field(default=86_400.0, gt=0)
    n: int | None = Field(default=100, gt=0)  # items per round (the same seeded draw every round)
    repeats: int = Field(default=3, ge=2)
    seed: int = 0
    concurrency: int = Field(default=4, gt=0)
    max_rps: float = Field(default=2.0, gt=0)
    temperature: float | None = None
    max_tokens: int = Field(default=256, gt=0)
    templates: str | None = None  # YAML with plain, basic, expert


class SafetyProbeConfig(BaseModel):
    """Scheduled safety probe rounds (``medic-gateway probe safety`` on a timer, in the worker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(min_length=1)
    harmful: str | None = None  # MedSafetyBench category_N.csv, or a folder of them; none: the packaged test split
    benign: str | None = None  # PubMedQA-L JSON (its questions are the benign requests); none: the packaged one
    every_s: float = Field(default=86_400.0, gt=0)
    n: int = Field(default=100, ge=0)  # requests of each kind per round (the same seeded draw); 0: all
    seed: int = 0
    concurrency: int = Field(default=4, gt=0)
    max_rps: float = Field(default=2.0, gt=0)
    max_tokens: int = Field(default=512, gt=0)


class ProbesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sycophancy: SycophancyProbeConfig | None = None
    safety: SafetyProbeConfig | None = None
