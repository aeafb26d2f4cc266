"""The gateway's configuration: one pydantic model, unknown keys rejected, errors located in the file.

Secrets never live in the file: upstream API keys and gateway keys are named by environment variable
(``api_key_env``, ``key_env``) or, for gateway keys, given as a SHA-256 digest (``key_sha256``).
docs/configuration.md has one heading per key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from judges.config import JudgingConfig, ProbesConfig
from judges.sample import Task

# Providers whose wire protocol is OpenAI's: they take the direct path, no translation.
OPENAI_COMPATIBLE = frozenset({"openai", "openai-compatible", "vllm", "tgi", "ollama", "sglang", "lmstudio"})
DIRECT_PROVIDERS = OPENAI_COMPATIBLE | {"azure"}
WILDCARD = "*"


M = TypeVar("M", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    max_request_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    access_log: bool = False
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0


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


class KeyConfig(Strict):
    tenant: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    key_env: str | None = None
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None

    @model_validator(mode="after")
    def _one_source(self) -> KeyConfig:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key_env or key_sha256")
        return self


class TelemetryConfig(Strict):
    capture_content: bool = False
    max_model_labels: Annotated[int, Field(gt=0)] = 100


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
    buffer_size: Annotated[int, Field(gt=0)] = 10_000
    privacy: Literal["raw", "pseudonymised", "encrypted"] = "pseudonymised"
    encryption_key_env: str | None = None
    encoder: Literal["thread", "process"] = "thread"  # where samples are pseudonymised: see docs/configuration.md

    @model_validator(mode="after")
    def _key_for_encryption(self) -> SamplingConfig:
        if self.privacy == "encrypted" and not self.encryption_key_env:
            raise ValueError("privacy 'encrypted' needs encryption_key_env")
        return self


class QueueConfig(Strict):
    redis_url_env: str | None = None  # unset: the embedded in-process queue and workers
    stream: str = "medic:samples"
    group: str = "judges"
    dead_letter_stream: str = "medic:samples:dead"
    maxlen: Annotated[int, Field(gt=0)] = 100_000
    ttl_s: Annotated[float, Field(gt=0)] = 86_400.0
    max_attempts: Annotated[int, Field(ge=1)] = 3
    claim_idle_ms: Annotated[int, Field(gt=0)] = 60_000
    batch_size: Annotated[int, Field(gt=0)] = 64
    timeout_s: Annotated[float, Field(gt=0)] = 1.0


class ResultsConfig(Strict):
    sqlite_path: str = "medic-results.sqlite3"
    ttl_s: Annotated[float, Field(gt=0)] = 30 * 86_400.0
    admin_key_env: str | None = None


class PoliciesConfig(Strict):
    packs: list[str] = ["clinical-default"]  # built-in pack names or pack files; [] for none
    audit_path: str | None = "medic-audit.jsonl"  # append-only JSON lines; null: no audit file
    stream_window_chars: Annotated[int, Field(ge=1, le=100_000)] = 200
    monitor_every_s: Annotated[float, Field(gt=0)] = 30.0  # how often results rules are evaluated


class WorkerConfig(Strict):
    judges: list[str] = ["refusal", "fidelity"]
    concurrency: Annotated[int, Field(gt=0)] = 4
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    embedded: bool = True  # without Redis, run the judges inside the gateway process


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


class ConfigError(Exception):
    """A configuration problem, with the file, the key path and the line where it is."""


def single_upstream(url: str, api_key_env: str | None = None, server: ServerConfig | None = None) -> GatewayConfig:
    """The no-config-file configuration: one upstream, every model name forwarded to it."""
    return GatewayConfig(
        server=server or ServerConfig(),
        upstreams={"default": UpstreamConfig(url=url, api_key_env=api_key_env)},
        models={WILDCARD: ModelConfig(routes=[Route(upstream="default")])},
    )


def load(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML configuration file; raise ConfigError naming key and line."""
    return load_yaml(path, GatewayConfig)


def load_yaml(path: str | Path, model: type[M], name_of: Callable[[list[str]], str | None] | None = None,
              context: dict[str, object] | None = None) -> M:  # fmt: skip
    """Read a YAML file into ``model``; a ConfigError names the file, the line and the key path of every
    problem, prefixed by ``name_of(key path)`` when that names the item (a policy rule's id)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_describe(path, node, exc, name_of)) from exc


def missing_env(config: GatewayConfig) -> list[str]:
    """Names of environment variables the configuration refers to that are not set."""
    names = [u.api_key_env for u in config.upstreams.values() if u.api_key_env]
    names += [k.key_env for k in config.keys if k.key_env]
    names += [n for n in (config.sampling.encryption_key_env, config.queue.redis_url_env,
                          config.results.admin_key_env) if n]  # fmt: skip
    judge_models = [config.judging.llm, *config.judging.stability.judges] if config.judging.llm else []
    names += [j.api_key_env for j in judge_models if j is not None and j.api_key_env]
    return [n for n in names if not os.environ.get(n)]


def _describe(path: Path, root: yaml.Node | None, exc: ValidationError,
              name_of: Callable[[list[str]], str | None] | None = None) -> str:  # fmt: skip
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        message = err["msg"].removeprefix("Value error, ")
        # A cross-field check reports its own path in the message ("models.x.routes.0.upstream: ...").
        own = re.match(r"^([\w.*-]+): (.*)$", message)
        if own and not loc:
            loc, message = own.group(1).split("."), own.group(2)
        key = ".".join(loc) or "(top level)"
        line = _line_of(root, loc)
        where = f"{path}:{line}" if line else str(path)
        name = name_of(loc) if name_of is not None else None
        lines.append(f"{where}: {name + ': ' if name else ''}{key}: {message}")
    return "\n".join(lines)


def _line_of(node: yaml.Node | None, loc: list[str]) -> int | None:
    """The 1-based line of the deepest node along loc that exists in the YAML tree."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node | None, part: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                found: yaml.Node = key if _is_empty(value) else value
                return found
    if isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
        item: yaml.Node = node.value[int(part)]
        return item
    return None


def _is_empty(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith("null")
