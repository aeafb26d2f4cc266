"""protocol/requests.py: bodies checked against OpenAI's request schemas before anything is forwarded."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.errors import InvalidRequest
from protocol.requests import check
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream

USER = {"role": "user", "content": "Is 40 mg of furosemide a usual dose?"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **fields}


REFUSED = {
    "stream as a string": (chat(stream="true"), "stream", "invalid_type"),
    "stream as a number": (chat(stream=1), "stream", "invalid_type"),
    "n as a string": (chat(n="2"), "n", "invalid_type"),
    "temperature out of range": (chat(temperature=5), "temperature", "invalid_value"),
    "top_p out of range": (chat(top_p=1.5), "top_p", "invalid_value"),
    "no messages": ({"model": "m", "messages": []}, "messages", "invalid_value"),
    "messages not a list": ({"model": "m", "messages": "hi"}, "messages", "invalid_type"),
    "a message not an object": ({"model": "m", "messages": ["hi"]}, "messages[0]", "invalid_value"),
    "an unknown role": (
        {"model": "m", "messages": [{"role": "doctor", "content": "x"}]},
        "messages[0].role",
        "invalid_value",
    ),
    "a message without content": ({"model": "m", "messages": [{"role": "user"}]}, "messages[0]", "invalid_value"),
    "an unknown content part": (
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "txt"}]}]},
        "messages[0].content",
        "invalid_value",
    ),
    "a tool answer without its call id": (
        {"model": "m", "messages": [USER, {"role": "tool", "content": "r"}]},
        "messages[1]",
        "invalid_value",
    ),
}


@pytest.mark.parametrize("body, param, code", REFUSED.values(), ids=REFUSED.keys())
def test_a_body_that_breaks_the_schema_is_refused_naming_the_param(body: dict[str, Any], param: str, code: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        check("chat", body)
    assert (raised.value.param, raised.value.code, raised.value.status) == (param, code, 400)
    assert "furosemide" not in raised.value.message  # never an echo of the body


@pytest.mark.parametrize(
    "operation, body",
    [
        ("chat", chat(stream=True, temperature=0.2, max_tokens=100, guided_json={"type": "object"}, top_k=5)),
        (
            "chat",
            {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    USER,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "40 mg"},
                    {"role": "user", "content": [{"type": "text", "text": "And in renal failure?"}]},
                ],
            },
        ),
        ("completions", {"model": "m", "prompt": "Furosemide is", "max_tokens": 5, "echo": False}),
        ("embeddings", {"model": "e", "input": ["a", "b"], "stream": True}),  # a field it does not name passes
    ],
)
def test_what_openai_and_the_servers_take_passes(operation: str, body: dict[str, Any]) -> None:
    check(operation, body)


def test_an_invalid_request_never_reaches_the_upstream(fake: FakeUpstream, gw: GatewayServer) -> None:
    response = http.request(gw.url, "POST", "/v1/chat/completions", json.dumps(chat(stream="true")).encode())
    assert response.status == 400
    error = json.loads(response.body)["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "stream", "invalid_type")
    assert fake.requests == []
