"""``upstreams`` and ``models``: where requests go, and each public model's routes in fallback order."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from config.base import Strict
from protocol.tasks import Task

# Providers whose wire protocol is OpenAI's: they take the direct path, no translation.
OPENAI_COMPATIBLE = frozenset({"openai", "openai-compatible", "vllm", "tgi", "ollama", "sglang", "lmstudio"})
DIRECT_PROVIDERS = OPENAI_COMPATIBLE | {"azure"}
WILDCARD = "*"


class UpstreamConfig(Strict):
    url: Annotated[str, Field(pattern=r"^https?://")] = ""
    provider: str = "openai"
    api_key_env: str | None = None
    api_version: str | None = None
    timeout_s: Annotated[float, Field(gt=0)] = 600.0
    connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    read_timeout_s: Annotated[float, Field(gt=0)] | None = None
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    backoff_ms: Annotated[int, Field(ge=0)] = 100
    backoff_max_ms: Annotated[int, Field(ge=0)] = 2000
    max_connections: Annotated[int, Field(gt=0)] = 512
    stream_usage: bool = True

    @model_validator(mode="after")
    def _url_for_direct_providers(self) -> UpstreamConfig:
        if self.provider in DIRECT_PROVIDERS and not self.url:
            raise ValueError(f"provider {self.provider!r} needs a url")
        if self.provider == "azure" and not self.api_version:
            raise ValueError("provider 'azure' needs api_version")
        return self

    @property
    def direct(self) -> bool:
        return self.provider in DIRECT_PROVIDERS


class Route(Strict):
    upstream: str
    model: str | None = None  # the model's name at the upstream; defaults to the public name


class ModelConfig(Strict):
    routes: Annotated[list[Route], Field(min_length=1)]
    task: Task | None = None  # what requests to this model ask for, unless their x-medic-task header says
