"""Providers that do not speak the OpenAI protocol (Anthropic, Bedrock, Vertex, Gemini, Cohere...).

litellm translates for them. It is imported only when such a provider is configured (this module is
imported only then too) and installed only with the ``providers`` extra: it costs milliseconds per call
(architecture.md), so OpenAI-compatible upstreams never pass through it. The gateway keeps its own retry
and fallback policy, so litellm's retries are off, and replies are re-encoded in OpenAI's shapes.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from config import UpstreamConfig
from protocol.errors import render_error
from upstreams.http import Call, Reply

JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream")]
CALLS = {"/chat/completions": "acompletion", "/completions": "atext_completion", "/embeddings": "aembedding"}


class TranslatedUpstream:
    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self.config = config
        self._litellm: Any = None

    async def start(self) -> None:
        # Without this, importing litellm fetches a price list from the internet, retrying for seconds.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        try:
            import litellm
        except ImportError as exc:
            raise RuntimeError(
                f"upstream {self.name!r} uses provider {self.config.provider!r}, which needs litellm: "
                "pip install 'medic-gateway[providers]'"
            ) from exc
        litellm.telemetry = False
        litellm.suppress_debug_info = True
        self._litellm = litellm

    async def close(self) -> None:
        self._litellm = None

    async def send(self, call: Call, model: str) -> Reply:
        function = CALLS.get(call.path)
        if function is None:
            return _error(404, f"{call.path} is not available for provider {self.config.provider}", "not_found")
        try:
            result = await getattr(self._litellm, function)(**self._arguments(call, model))
        except Exception as exc:
            return self._failure(exc)
        if not call.stream:
            return Reply(200, JSON_HEADERS, orjson.dumps(result.model_dump(exclude_none=True)))
        events = _events(result)
        try:
            first = await anext(events)
        except Exception as exc:  # nothing reached the client yet: retry or fall back as usual
            return self._failure(exc)
        return Reply(200, SSE_HEADERS, first, rest=events, usage_injected=self._injects_usage(call))

    def _injects_usage(self, call: Call) -> bool:
        return call.stream and self.config.stream_usage and call.path != "/embeddings" and not call.wants_usage

    def _arguments(self, call: Call, model: str) -> dict[str, Any]:
        arguments = {k: v for k, v in call.payload.items() if k != "model"}
        arguments |= {
            "model": f"{self.config.provider}/{model}",
            "timeout": self.config.timeout_s,
            "num_retries": 0,
            "metadata": {"request_id": call.request_id},
        }
        if self._injects_usage(call):
            arguments["stream_options"] = {"include_usage": True}
        if self.config.url:
            arguments["api_base"] = self.config.url
        if self.config.api_key_env:
            arguments["api_key"] = os.environ.get(self.config.api_key_env, "")
        if self.config.api_version:
            arguments["api_version"] = self.config.api_version
        return arguments

    def _failure(self, exc: Exception) -> Reply:
        """Map litellm's exceptions onto what the forwarding policy understands."""
        litellm = self._litellm
        if isinstance(exc, litellm.Timeout):
            raise TimeoutError(str(type(exc).__name__)) from exc
        if isinstance(exc, litellm.APIConnectionError):
            raise ConnectionError(f"provider {self.config.provider} unreachable") from exc
        status = getattr(exc, "status_code", None)
        status = status if isinstance(status, int) and 400 <= status <= 599 else 502
        # litellm's messages can quote the request; keep only the exception's kind.
        return _error(status, f"provider {self.config.provider} answered {status} ({type(exc).__name__})",
                      "provider_error")  # fmt: skip


async def _events(stream: Any) -> AsyncIterator[bytes]:
    async for chunk in stream:
        data = chunk.model_dump(exclude_none=True)
        if data.get("usage") and all(_empty(c) for c in data.get("choices", [])):
            data["choices"] = []  # OpenAI's usage chunk: choices is always an empty list
        yield b"data: " + orjson.dumps(data) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _empty(choice: dict[str, Any]) -> bool:
    return not choice.get("delta") and not choice.get("finish_reason")


def _error(status: int, message: str, code: str) -> Reply:
    error_type = "invalid_request_error" if status < 500 else "upstream_error"
    return Reply(status, JSON_HEADERS, render_error(message, error_type, None, code))
