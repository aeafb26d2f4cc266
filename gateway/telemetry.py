"""Turn a finished Exchange into metrics and span attributes, after the client has its answer."""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.trace import Span, Status, StatusCode

from gateway.metrics import Metrics
from protocol.exchange import Exchange

# Request parameters recorded on spans, with their gen_ai.request.* attribute names.
REQUEST_PARAMETERS = {
    "temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p",
    "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
    "seed": "gen_ai.request.seed", "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty", "n": "gen_ai.request.choice.count",
}  # fmt: skip


def observe(metrics: Metrics, ex: Exchange, endpoint: str) -> None:
    model = metrics.model_label(ex.model) if ex.model else ""
    status = str(ex.status)
    metrics.requests.labels(endpoint, model, ex.upstream, ex.tenant, status).inc()
    total = ex.finished_s if ex.finished_s is not None else ex.elapsed()
    metrics.overhead.labels(endpoint).observe(max(total - ex.upstream_wait_s, 0.0))
    if ex.disconnected:
        metrics.client_disconnects.labels(endpoint, model).inc()
    if not ex.upstream:
        return  # answered by the gateway itself (an error before routing)
    genai = (ex.operation, ex.provider, model)
    error = ex.error_type or ""
    metrics.request_duration.labels(*genai, error).observe(total)
    metrics.operation_duration.labels(*genai, error).observe(ex.upstream_wait_s)
    if ex.first_token_s is not None:
        metrics.time_to_first_token.labels(*genai).observe(ex.first_token_s)
    tokens_in, tokens_out = ex.tokens()
    if tokens_in is not None:
        metrics.token_usage.labels(*genai, "input").observe(tokens_in)
    if tokens_out is not None:
        metrics.token_usage.labels(*genai, "output").observe(tokens_out)


def span_attributes(span: Span, ex: Exchange, payload: dict[str, Any], capture_content: bool) -> None:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": ex.operation,
        "gen_ai.request.model": ex.model,
        "medic_gateway.request_id": ex.request_id,
        "medic_gateway.tenant": ex.tenant,
        "http.response.status_code": ex.status,
    }
    for key, name in REQUEST_PARAMETERS.items():
        value = payload.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    if ex.upstream:
        attributes |= {"gen_ai.provider.name": ex.provider, "medic_gateway.upstream": ex.upstream}
    if ex.response_model:
        attributes["gen_ai.response.model"] = ex.response_model
    tokens_in, tokens_out = ex.tokens()
    if tokens_in is not None:
        attributes["gen_ai.usage.input_tokens"] = tokens_in
    if tokens_out is not None:
        attributes["gen_ai.usage.output_tokens"] = tokens_out
    if ex.finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = ex.finish_reasons
    if capture_content:
        attributes |= _content(payload, ex)
    span.set_attributes(attributes)
    if ex.error_type or ex.status >= 400:
        span.set_attribute("error.type", ex.error_type or str(ex.status))
        span.set_status(Status(StatusCode.ERROR))


def _content(payload: dict[str, Any], ex: Exchange) -> dict[str, str]:
    """Messages in the GenAI conventions' shape, recorded only when content capture is on (they are PHI)."""
    messages = payload.get("messages")
    if isinstance(messages, list):
        inputs = [_message(m) for m in messages if isinstance(m, dict)]
    else:
        inputs = [{"role": "user", "parts": [{"type": "text", "content": str(payload.get("prompt", ""))}]}]
    outputs = [
        {"role": "assistant", "parts": [{"type": "text", "content": text}],
         "finish_reason": ex.finish_reasons[i] if i < len(ex.finish_reasons) else None}
        for i, text in enumerate(ex.output)
    ]  # fmt: skip
    return {"gen_ai.input.messages": orjson.dumps(inputs).decode(),
            "gen_ai.output.messages": orjson.dumps(outputs).decode()}  # fmt: skip


def _message(message: dict[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    else:
        texts = [content] if isinstance(content, str) else []
    return {"role": message.get("role", "user"), "parts": [{"type": "text", "content": t} for t in texts]}
