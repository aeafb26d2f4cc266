"""The gateway held to the OpenAPI document it serves (schemathesis, a bounded budget): whatever a client sends,
valid or not, it answers with a status and a body the document promises (an OpenAI answer, an OpenAI error
envelope), never a server error of its own."""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream

EXAMPLES = 25  # per operation and mode: the budget CI can afford


def test_the_document_names_every_endpoint_with_openai_s_request_schemas(gw: GatewayServer) -> None:
    document = json.loads(http.request(gw.url, "GET", "/openapi.json").body)
    assert set(document["paths"]) == {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                                      "/healthz", "/readyz", "/metrics"}  # fmt: skip
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/CreateChatCompletionRequest"}


def test_every_answer_is_one_the_document_promises(fake: FakeUpstream, gw: GatewayServer) -> None:
    schema = schemathesis.openapi.from_url(gw.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    runs = [(op, GenerationMode.POSITIVE) for op in operations]
    runs += [(op, GenerationMode.NEGATIVE) for op in operations if op.method.upper() == "POST"]  # GETs take nothing
    for operation, mode in runs:

        @given(case=operation.as_strategy(generation_mode=mode))  # valid requests, then requests breaking it
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,
        )  # the same cases every run: CI does not flake; raise EXAMPLES to explore
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call()
            assert response.status_code not in (500, 501), response.text  # a bug of the gateway's own
            case.validate_response(response, excluded_checks=[schemathesis.checks.not_a_server_error])

        fuzz()
