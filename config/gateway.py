"""The whole configuration: one strict pydantic model made of the sections beside this module.

Secrets never live in the file: upstream API keys and gateway keys are named by environment variable
(``api_key_env``, ``key_env``) or, for gateway keys, given as a SHA-256 digest (``key_sha256``).
docs/configuration.md has one heading per key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from config.base import Strict, load_yaml
from config.judging import JudgingConfig
from config.pipeline import QueueConfig, ResultsConfig, WorkerConfig
from config.policies import PoliciesConfig
from config.probes import ProbesConfig
from config.sampling import SamplingConfig
from config.server import KeyConfig, ServerConfig, TelemetryConfig
from config.upstreams import WILDCARD, ModelConfig, Route, UpstreamConfig


class GatewayConfig(Strict):
    server: ServerConfig = ServerConfig()
    upstreams: dict[str, UpstreamConfig]
    models: Annotated[dict[str, ModelConfig], Field(min_length=1)]
    keys: list[KeyConfig] = []
    telemetry: TelemetryConfig = TelemetryConfig()
    sampling: SamplingConfig = SamplingConfig()
    queue: QueueConfig = QueueConfig()
    results: ResultsConfig = ResultsConfig()
    worker: WorkerConfig = WorkerConfig()
    judging: JudgingConfig = JudgingConfig()
    probes: ProbesConfig = ProbesConfig()
    policies: PoliciesConfig = PoliciesConfig()

    @model_validator(mode="after")
    def _routes_name_upstreams(self) -> GatewayConfig:
        for name, model in self.models.items():
            for i, route in enumerate(model.routes):
                if route.upstream not in self.upstreams:
                    known = ", ".join(sorted(self.upstreams)) or "none"
                    raise ValueError(
                        f"models.{name}.routes.{i}.upstream: unknown upstream {route.upstream!r} (known: {known})"
                    )
        return self


def single_upstream(url: str, api_key_env: str | None = None, server: ServerConfig | None = None) -> GatewayConfig:
    """The no-config-file configuration: one upstream, every model name forwarded to it."""
    return GatewayConfig(
        server=server or ServerConfig(),
        upstreams={"default": UpstreamConfig(url=url, api_key_env=api_key_env)},
        models={WILDCARD: ModelConfig(routes=[Route(upstream="default")])},
    )


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML configuration file; raise ConfigError naming key and line."""
    return load_yaml(path, GatewayConfig)


def missing_env(config: GatewayConfig) -> list[str]:
    """Names of environment variables the configuration refers to that are not set."""
    names = [u.api_key_env for u in config.upstreams.values() if u.api_key_env]
    names += [k.key_env for k in config.keys if k.key_env]
    names += [n for n in (config.sampling.encryption_key_env, config.queue.redis_url_env,
                          config.results.admin_key_env) if n]  # fmt: skip
    judge_models = [config.judging.llm, *config.judging.stability.judges] if config.judging.llm else []
    names += [j.api_key_env for j in judge_models if j is not None and j.api_key_env]
    return [n for n in names if not os.environ.get(n)]
