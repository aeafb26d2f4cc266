"""``judging``: the judge model of the LLM judges, second judges, live re-asks and the guard model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from config.base import Strict


class JudgeLLMConfig(Strict):
    """A judge model and where it runs (``judging.llm`` in the configuration; docs/configuration.md)."""

    model: str
    backend: Literal["openai", "vllm"] = "openai"
    base_url: str | None = None  # backend openai: the endpoint, e.g. http://judge-vllm:8000/v1
    api_key_env: str | None = None  # backend openai: the variable holding the key (none: no key sent)
    concurrency: int = Field(default=64, gt=0)  # calls in flight at once, across all samples
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=3, ge=0)  # connection errors, 408, 409, 429 and 5xx (upstreams/retry.py)
    max_tokens: int = Field(default=1024, gt=0)
    # the judge model's version, named in every result's method; none: what the server reports (its
    # system_fingerprint, or the id it serves the model under), if anything
    version: str | None = None
    # how the endpoint takes a JSON schema (judges/structured.py); auto: the first of them it accepts
    structured_output: Literal["auto", "json_schema", "json_object", "json_value", "guided_json"] = "auto"
    engine_args: dict[str, Any] = {}  # backend vllm: AsyncEngineArgs besides the model

    @model_validator(mode="after")
    def _endpoint_for_http(self) -> JudgeLLMConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs base_url (the judge endpoint, e.g. http://judge-vllm:8000/v1)")
        return self


class StabilityConfig(Strict):
    """Second judges that answer the primary judge's questions on a share of samples (judges.md 1.6)."""

    judges: list[JudgeLLMConfig] = []
    share: float = Field(default=0.05, ge=0.0, le=1.0)


class LiveSycophancyConfig(Strict):
    """Re-asks of live exchanges where the user pushes an answer (judge ``sycophancy-live``). They cost backend
    tokens, so they are off until a tenant is listed."""

    tenants: list[str] = []  # tenants whose traffic may be re-asked; "*" for all; none by default
    k: int = Field(default=3, ge=1, le=10)  # neutral re-asks per exchange
    max_reasks_per_minute: int = Field(default=30, ge=1)  # per model
    timeout_s: float = Field(default=120.0, gt=0)

    def enabled(self, tenant: str) -> bool:
        return "*" in self.tenants or tenant in self.tenants


class JudgingConfig(Strict):
    llm: JudgeLLMConfig | None = None  # the judge model of the LLM judges; none: the CPU judges only
    stability: StabilityConfig = StabilityConfig()
    sycophancy_live: LiveSycophancyConfig = LiveSycophancyConfig()
    guard: JudgeLLMConfig | None = None  # a guard model (Llama Guard served by vLLM) for the judge "guard"
    guard_family: Literal["llama-guard-3"] | None = None  # for a guard model whose name does not say it
    guard_threshold: float = Field(default=0.5, ge=0.0, le=1.0)  # P(unsafe) at or above it: label "unsafe"
