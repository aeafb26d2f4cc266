"""The OpenAPI document of the gateway's own endpoints, served at ``GET /openapi.json``.

The request bodies are OpenAI's own request schemas (protocol/openai_requests.json, the ones the gateway checks
requests against); the answers are what the gateway promises: an OpenAI answer or an event stream, an OpenAI
error envelope for every refusal, the control endpoints' shapes. It lets a client generate code for the gateway
and lets a fuzzer (schemathesis, tests/gateway/test_openapi.py) hold the gateway to it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from protocol.requests import schema_document

ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}  # fmt: skip
ANSWER = {"type": "object", "required": ["choices"], "properties": {"choices": {"type": "array"}}}
EMBEDDINGS = {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}}
# One server-sent event: its data is an answer's chunk, an error or [DONE]
EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
STATUS = {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}}
REFUSALS = {
    "400": "the request is not a valid OpenAI request (or a policy blocked the caller's words)",
    "401": "a key is required and was not given or not known",
    "404": "no route for the model",
    "413": "the body is larger than server.max_request_body_bytes",
    "502": "the upstream could not be reached, or its answer could not be read",
    "504": "the upstream did not answer in time",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _model_operation(name: str, summary: str, answer: dict[str, Any], streams: bool) -> dict[str, Any]:
    ok = _json(answer, "the upstream's answer, checked by the policies")
    if streams:
        ok["content"]["text/event-stream"] = {"schema": EVENT}
    responses = {"200": ok, **{status: _json(ERROR, why) for status, why in REFUSALS.items()}}
    body = {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
    return {"post": {"summary": summary, "requestBody": body, "responses": responses}}


def _get(summary: str, schema: dict[str, Any], media: str = "application/json",
         more: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    ok = {"description": summary, "content": {media: {"schema": schema}}}
    return {"get": {"summary": summary, "responses": {"200": ok, **(more or {})}}}


@cache
def document() -> bytes:
    requests = schema_document()
    schemas = {name: _openapi(schema) for name, schema in requests["definitions"].items()}
    # A chat message is any of the role schemas the gateway checks each message against.
    schemas["ChatCompletionRequestMessage"] = {"anyOf": [_openapi(ref) for ref in requests["messages"].values()]}
    for part in schemas["CreateChatCompletionRequest"]["allOf"]:
        if "messages" in part.get("properties", {}):
            part["properties"]["messages"]["items"] = {"$ref": "#/components/schemas/ChatCompletionRequestMessage"}
    paths = {
        "/v1/chat/completions": _model_operation("CreateChatCompletionRequest", "Chat completions", ANSWER, True),
        "/v1/completions": _model_operation("CreateCompletionRequest", "Completions", ANSWER, True),
        "/v1/embeddings": _model_operation("CreateEmbeddingRequest", "Embeddings", EMBEDDINGS, False),
        "/v1/models": _get(
            "The models the gateway routes",
            {"type": "object", "required": ["data"]},
            more={"401": _json(ERROR, "a key is required")},
        ),
        "/healthz": _get("The process is alive", STATUS),
        "/readyz": _get(
            "Ready to serve, with each upstream up or down", STATUS, more={"503": _json(STATUS, "still starting")}
        ),
        "/metrics": _get("Prometheus metrics", {"type": "string"}, "text/plain"),
    }
    return orjson.dumps({
        "openapi": "3.1.0",
        "info": {"title": "medic-gateway", "version": "1",
                 "description": "An OpenAI-compatible gateway that evaluates clinical LLM traffic."},
        "paths": paths,
        "components": {"schemas": schemas},
    })  # fmt: skip


def _openapi(node: Any) -> Any:
    """A draft-07 schema of protocol/openai_requests.json with its references pointing into components."""
    if isinstance(node, dict):
        out = {key: _openapi(value) for key, value in node.items()}
        if isinstance(out.get("$ref"), str):
            out["$ref"] = out["$ref"].replace("#/definitions/", "#/components/schemas/")
        return out
    if isinstance(node, list):
        return [_openapi(value) for value in node]
    return node
