"""The configuration: one strict model (unknown keys rejected everywhere), one module per section.

``gateway`` is the whole file's model and how to load it; ``base`` the strict base class and the YAML reader
whose errors name file, line and key path; the others one section each (docs/configuration.md has a heading
per key). Everything a caller needs is importable from here.
"""

from config.base import ConfigError, Strict, load_yaml
from config.gateway import GatewayConfig, load_config, missing_env, single_upstream
from config.judging import JudgeLLMConfig, JudgingConfig, LiveSycophancyConfig, StabilityConfig
from config.pipeline import QueueConfig, ResultsConfig, WorkerConfig
from config.policies import PoliciesConfig
from config.probes import ProbesConfig, SafetyProbeConfig, SycophancyProbeConfig
from config.sampling import SampleRate, SamplingConfig
from config.server import KeyConfig, ServerConfig, TelemetryConfig
from config.upstreams import DIRECT_PROVIDERS, OPENAI_COMPATIBLE, WILDCARD, ModelConfig, Route, UpstreamConfig

__all__ = [
    "DIRECT_PROVIDERS", "OPENAI_COMPATIBLE", "WILDCARD", "ConfigError", "GatewayConfig", "JudgeLLMConfig",
    "JudgingConfig", "KeyConfig", "LiveSycophancyConfig", "ModelConfig", "PoliciesConfig", "ProbesConfig",
    "QueueConfig", "ResultsConfig", "Route", "SafetyProbeConfig", "SampleRate", "SamplingConfig", "ServerConfig",
    "StabilityConfig", "Strict", "SycophancyProbeConfig", "TelemetryConfig", "UpstreamConfig", "WorkerConfig",
    "load_config", "load_yaml", "missing_env", "single_upstream",
]  # fmt: skip
