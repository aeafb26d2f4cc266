"""``server``, ``keys`` and ``telemetry``: where the gateway listens, who may call it, what it exports."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from config.base import Strict


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    max_request_body_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    # Model requests checked against OpenAI's request schemas before they are forwarded (protocol/requests.py)
    validate_requests: bool = True
    access_log: bool = False
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0


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
