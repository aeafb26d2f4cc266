"""Non-streamed pass-through, end to end: OpenAI SDK -> gateway (uvicorn) -> fake upstream, all on loopback.

The gateway forwards the client's bytes and relays the upstream's bytes; nothing is re-encoded unless a
route renames the model.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
from collections.abc import Callable
from typing import Any

import openai
import pytest

from config import GatewayConfig, KeyConfig, ModelConfig, Route, UpstreamConfig, single_upstream
from gateway.app import new_request_id
from gateway.proxy import WATCH_AFTER_S, ClientWatch
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, chat_completion, embeddings, error, models_list, text_completion

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]

CHAT = "/v1/chat/completions"
HEX_ID = re.compile(r"^[0-9a-f]{32}$")
MESSAGES = [{"role": "user", "content": "What is the normal range of serum potassium?"}]


# ---------------------------------------------------------------------------------------- bytes


def test_unknown_request_fields_reach_the_upstream_byte_identical(fake: FakeUpstream, gw: GatewayServer) -> None:
    body = (
        b'{ "model" : "gpt-test",\n  "messages": [{"role": "user", "content": "caf\\u00e9 \xe2\x9c\x93"}],'
        b' "x_vendor_extension": {"nested": [1, 2.50, true, null]}, "temperature": 0.70,'
        b' "metadata": {"ward": "7B"}, "store": false }'
    )
    response = http.request(gw.url, "POST", CHAT, body)
    assert response.status == 200, response.body
    assert fake.last.path == CHAT
    assert fake.last.body == body


def test_sdk_extra_body_fields_reach_the_upstream(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    extra = {"x_vendor_extension": {"a": [1, 2]}, "guided_json": {"type": "object"}, "top_k": 20}
    openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES, extra_body=extra)
    received = fake.last.json
    for key, value in extra.items():
        assert received[key] == value
    assert received["messages"] == MESSAGES


UPSTREAM_BODY = (
    b'{"id": "chatcmpl-xyz", "object": "chat.completion", "created": 1700000123, "model": "gpt-test-2024-08-06",'
    b' "choices": [{"index": 0, "message": {"role": "assistant", "content": "3.5 to 5.0 mmol/L \\u2713",'
    b' "refusal": null}, "logprobs": null, "finish_reason": "stop"}],'
    b' "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23},'
    b' "service_tier": "default", "x_unknown": {"kept": [1, 2.50]}, "system_fingerprint": "fp_abc"}\n'
)


def test_response_body_reaches_the_client_byte_identical(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(
        CHAT, Json(UPSTREAM_BODY, headers={"openai-processing-ms": "42", "x-ratelimit-remaining-requests": "9"})
    )
    response = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES})
    assert response.status == 200
    assert response.body == UPSTREAM_BODY
    assert response.header("content-type") == "application/json"
    assert response.header("content-length") == str(len(UPSTREAM_BODY))
    assert response.header("openai-processing-ms") == "42"
    assert response.header("x-ratelimit-remaining-requests") == "9"


def test_sdk_parses_the_relayed_response(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    fake.script(CHAT, Json(UPSTREAM_BODY))
    raw = openai_client(gw).chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES)
    assert raw.http_response.content == UPSTREAM_BODY
    completion = raw.parse()
    assert completion.id == "chatcmpl-xyz"
    assert completion.created == 1700000123
    assert completion.model == "gpt-test-2024-08-06"
    assert completion.system_fingerprint == "fp_abc"
    assert completion.choices[0].message.content == "3.5 to 5.0 mmol/L \u2713"
    assert completion.usage is not None and completion.usage.total_tokens == 23
    assert completion.to_dict()["x_unknown"] == {"kept": [1, 2.5]}


def test_a_route_that_renames_the_model_keeps_every_other_field(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client
) -> None:
    config = GatewayConfig(
        upstreams={"vllm": UpstreamConfig(url=fake.url, provider="vllm")},
        models={"clinical-small": ModelConfig(routes=[Route(upstream="vllm", model="Qwen/Qwen3-8B")])},
    )
    gw = gateway(config)
    extra = {"x_vendor_extension": {"a": 1}, "chat_template_kwargs": {"enable_thinking": False}}
    openai_client(gw).chat.completions.create(
        model="clinical-small",
        messages=MESSAGES,
        temperature=0.2,
        seed=7,
        extra_body=extra,
    )
    received = fake.last.json
    assert received["model"] == "Qwen/Qwen3-8B"
    assert received["messages"] == MESSAGES
    assert received["temperature"] == 0.2
    assert received["seed"] == 7
    assert received["x_vendor_extension"] == {"a": 1}
    assert received["chat_template_kwargs"] == {"enable_thinking": False}


# ------------------------------------------------------------------------------ request features

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_lab_reference",
            "description": "Reference range of a lab test.",
            "parameters": {"type": "object", "properties": {"test": {"type": "string"}}, "required": ["test"]},
            "strict": True,
        },
    }
]


def _choice(message: dict[str, Any], finish: str = "stop", index: int = 0, logprobs: Any = None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "refusal": None, **message},
        "logprobs": logprobs,
        "finish_reason": finish,
    }


def _check_tools(completion: Any) -> None:
    call = completion.choices[0].message.tool_calls[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.id == "call_1" and call.type == "function"
    assert call.function.name == "lookup_lab_reference"
    assert json.loads(call.function.arguments) == {"test": "potassium"}


def _check_n(completion: Any) -> None:
    assert [c.message.content for c in completion.choices] == ["first", "second"]
    assert [c.index for c in completion.choices] == [0, 1]


def _check_logprobs(completion: Any) -> None:
    content = completion.choices[0].logprobs.content
    assert [t.token for t in content] == ["3", ".5"]
    assert content[0].top_logprobs[1].token == "4"
    assert content[0].top_logprobs[1].logprob == -2.25


def _check_response_format(completion: Any) -> None:
    assert json.loads(completion.choices[0].message.content) == {"low": 3.5, "high": 5.0}


def _check_seed(completion: Any) -> None:
    assert completion.system_fingerprint == "fp_seeded"


def _check_reasoning(completion: Any) -> None:
    message = completion.choices[0].message
    assert message.to_dict()["reasoning_content"] == "Potassium reference ranges are lab-specific."
    assert completion.usage.completion_tokens_details.reasoning_tokens == 12


TOP = [{"token": "3", "logprob": -0.01, "bytes": [51]}, {"token": "4", "logprob": -2.25, "bytes": [52]}]
LOGPROBS = {
    "content": [
        {"token": "3", "logprob": -0.01, "bytes": [51], "top_logprobs": TOP},
        {"token": ".5", "logprob": -0.2, "bytes": [46, 53], "top_logprobs": []},
    ],
    "refusal": None,
}
SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "range",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"low": {"type": "number"}, "high": {"type": "number"}},
            "required": ["low", "high"],
            "additionalProperties": False,
        },
    },
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "lookup_lab_reference", "arguments": '{"test": "potassium"}'},
}
FEATURES: dict[str, tuple[dict[str, Any], dict[str, Any], Callable[[Any], None]]] = {
    "tools": (
        {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": False},
        {"choices": [_choice({"content": None, "tool_calls": [TOOL_CALL]}, finish="tool_calls")]},
        _check_tools,
    ),
    "n": (
        {"n": 2, "temperature": 1.0},
        {"choices": [_choice({"content": "first"}), _choice({"content": "second"}, index=1)]},
        _check_n,
    ),
    "logprobs": (
        {"logprobs": True, "top_logprobs": 2},
        {"choices": [_choice({"content": "3.5"}, logprobs=LOGPROBS)]},
        _check_logprobs,
    ),
    "response_format": (
        {"response_format": SCHEMA},
        {"choices": [_choice({"content": '{"low": 3.5, "high": 5.0}'})]},
        _check_response_format,
    ),
    "seed": ({"seed": 1234}, {"system_fingerprint": "fp_seeded"}, _check_seed),
    "reasoning": (
        {"reasoning_effort": "high", "max_completion_tokens": 512},
        {
            "choices": [
                _choice(
                    {"content": "3.5-5.0 mmol/L", "reasoning_content": "Potassium reference ranges are lab-specific."}
                )
            ],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 20,
                "total_tokens": 29,
                "completion_tokens_details": {"reasoning_tokens": 12},
            },
        },
        _check_reasoning,
    ),
}


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_request_features_pass_through_both_ways(
    feature: str, fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    params, reply_fields, check = FEATURES[feature]
    reply = json.dumps(chat_completion(**{"model": "gpt-test"}) | reply_fields, indent=1).encode()
    fake.script(CHAT, Json(reply))
    raw = openai_client(gw).chat.completions.with_raw_response.create(model="gpt-test", messages=MESSAGES, **params)
    received = fake.last.json
    for key, value in params.items():
        assert received[key] == value, key
    assert raw.http_response.content == reply
    check(raw.parse())


# ------------------------------------------------------------------------------ other endpoints


def test_completions_endpoint(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    reply = json.dumps(text_completion("Hypokalaemia.", model="gpt-test-instruct")).encode()
    fake.script("/v1/completions", Json(reply))
    raw = openai_client(gw).completions.with_raw_response.create(
        model="gpt-test-instruct", prompt="Low potassium is called", max_tokens=5, echo=False, suffix="."
    )
    assert fake.last.path == "/v1/completions"
    assert fake.last.json == {
        "model": "gpt-test-instruct",
        "prompt": "Low potassium is called",
        "max_tokens": 5,
        "echo": False,
        "suffix": ".",
    }
    assert raw.http_response.content == reply
    assert raw.parse().choices[0].text == "Hypokalaemia."


def test_embeddings_endpoint(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    reply = json.dumps(embeddings(2, model="embed-test")).encode()
    fake.script("/v1/embeddings", Json(reply))
    raw = openai_client(gw).embeddings.with_raw_response.create(
        model="embed-test", input=["potassium", "sodium"], encoding_format="float", dimensions=3
    )
    assert fake.last.path == "/v1/embeddings"
    assert fake.last.json == {
        "model": "embed-test",
        "input": ["potassium", "sodium"],
        "encoding_format": "float",
        "dimensions": 3,
    }
    assert raw.http_response.content == reply
    result = raw.parse()
    assert [d.embedding for d in result.data] == [[0.25, -0.5, 0.125], [0.25, -0.5, 0.25]]


def test_embeddings_are_never_treated_as_a_stream(fake: FakeUpstream, gw: GatewayServer) -> None:
    body = b'{"model":"embed-test","input":"x","stream":true}'
    response = http.request(gw.url, "POST", "/v1/embeddings", body)
    assert response.status == 200
    assert fake.last.body == body  # no stream_options injected
    assert response.body == json.dumps(embeddings(1, "embed-test"), separators=(",", ":")).encode()


def test_models_lists_configured_models_without_asking_the_upstream(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client
) -> None:
    config = GatewayConfig(
        upstreams={"u": UpstreamConfig(url=fake.url)},
        models={
            "clinical-large": ModelConfig(routes=[Route(upstream="u")]),
            "clinical-small": ModelConfig(routes=[Route(upstream="u", model="small")]),
        },
    )
    gw = gateway(config)
    models = openai_client(gw).models.list()
    assert sorted(m.id for m in models.data) == ["clinical-large", "clinical-small"]
    assert all(m.object == "model" for m in models.data)
    assert fake.requests == []


def test_models_in_pass_through_mode_adds_what_the_upstream_lists(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client
) -> None:
    fake.script("/v1/models", Json(models_list("clinical-large", "upstream-1", "upstream-2")))
    route = ModelConfig(routes=[Route(upstream="u")])
    config = GatewayConfig(upstreams={"u": UpstreamConfig(url=fake.url)}, models={"clinical-large": route, "*": route})
    gw = gateway(config)
    ids = [m.id for m in openai_client(gw).models.list().data]
    assert sorted(ids) == ["clinical-large", "upstream-1", "upstream-2"]
    assert fake.last.method == "GET" and fake.last.path == "/v1/models"


def test_models_in_open_pass_through_mode_asks_with_the_clients_key(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script("/v1/models", Json(models_list("upstream-1")))
    assert [m.id for m in openai_client(gw, api_key="sk-clients-own").models.list().data] == ["upstream-1"]
    assert fake.last.headers["authorization"] == "Bearer sk-clients-own"


def test_models_survives_an_upstream_that_cannot_list(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script("/v1/models", error(500, "boom", type_="server_error"))
    response = http.request(gw.url, "GET", "/v1/models")
    assert response.status == 200
    assert response.json() == {"object": "list", "data": []}


# --------------------------------------------------------------------------------------- headers


def test_client_authorization_is_forwarded_when_the_gateway_is_open(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    openai_client(gw, api_key="sk-tenant-own").chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert fake.last.headers.getall("authorization") == ["Bearer sk-tenant-own"]


def test_upstream_key_replaces_the_client_key(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_KEY", "sk-upstream-secret")
    gw = gateway(single_upstream(fake.url, api_key_env="TEST_UPSTREAM_KEY"))
    openai_client(gw, api_key="sk-client").chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert fake.last.headers.getall("authorization") == ["Bearer sk-upstream-secret"]


def test_gateway_keys_are_never_forwarded_upstream(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_GATEWAY_KEY", "gw-key-1")
    config = single_upstream(fake.url).model_copy(
        update={"keys": [KeyConfig(tenant="ward7", key_env="TEST_GATEWAY_KEY")]}
    )
    gw = gateway(config)
    openai_client(gw, api_key="gw-key-1").chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert "authorization" not in fake.last.headers


def test_client_headers_pass_through_but_hop_headers_do_not(fake: FakeUpstream, gw: GatewayServer) -> None:
    headers = {
        "OpenAI-Organization": "org-1",
        "X-Custom-Trace": "abc",
        "Proxy-Authorization": "Basic eA==",
        "Connection": "keep-alive",
        "Keep-Alive": "timeout=5",
    }
    http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES}, headers)
    received = fake.last.headers
    assert received["openai-organization"] == "org-1"
    assert received["x-custom-trace"] == "abc"
    assert "proxy-authorization" not in received
    assert "keep-alive" not in received


# ------------------------------------------------------------------------------------ request ids


def test_generated_request_id_is_returned_and_forwarded(fake: FakeUpstream, gw: GatewayServer) -> None:
    first = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES})
    second = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES})
    ids = [first.header("x-request-id"), second.header("x-request-id")]
    assert all(i and HEX_ID.match(i) for i in ids)
    assert ids[0] != ids[1]
    assert [r.headers.getall("x-request-id") for r in fake.requests] == [[ids[0]], [ids[1]]]


def test_incoming_request_id_is_honoured_and_forwarded(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Json(chat_completion(), headers={"x-request-id": "upstream-own-id"}))
    raw = openai_client(gw).chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=MESSAGES,
        extra_headers={"X-Request-ID": "ehr-42.visit_7:note-1"},
    )
    assert raw.http_response.headers.get_list("x-request-id") == ["ehr-42.visit_7:note-1"]
    assert fake.last.headers.getall("x-request-id") == ["ehr-42.visit_7:note-1"]


@pytest.mark.parametrize("given", ["has spaces in it", "x" * 129, "semi;colon", "<script>"])
def test_an_invalid_incoming_request_id_is_replaced(given: str, fake: FakeUpstream, gw: GatewayServer) -> None:
    response = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES}, {"X-Request-ID": given})
    assert response.status == 200
    returned = response.header_all("x-request-id")
    assert len(returned) == 1 and HEX_ID.match(returned[0])
    assert fake.last.headers.getall("x-request-id") == returned


EVERY_KIND_OF_RESPONSE = {
    "ok": ("POST", CHAT, b'{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}', 200),
    "malformed json": ("POST", CHAT, b"{nope", 400),
    "invalid request": ("POST", CHAT, b'{"model":"gpt-test","messages":[]}', 400),
    "unknown path": ("GET", "/v1/nothing-here", None, 404),
    "wrong method": ("GET", CHAT, None, 405),
    "upstream error": ("POST", CHAT, b'{"model":"upstream-400","messages":[{"role":"user","content":"hi"}]}', 400),
    "health": ("GET", "/healthz", None, 200),
    "ready": ("GET", "/readyz", None, 200),
    "metrics": ("GET", "/metrics", None, 200),
    "models": ("GET", "/v1/models", None, 200),
}


@pytest.mark.parametrize("kind", list(EVERY_KIND_OF_RESPONSE))
def test_every_response_carries_the_request_id(kind: str, fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(
        CHAT,
        lambda r: (
            error(400, headers={"x-request-id": "up"}) if r.json["model"] == "upstream-400" else Json(chat_completion())
        ),
    )
    method, path, body, status = EVERY_KIND_OF_RESPONSE[kind]
    response = http.request(gw.url, method, path, body, {"X-Request-ID": f"rid-{kind.replace(' ', '-')}"})
    assert response.status == status
    assert response.header_all("x-request-id") == [f"rid-{kind.replace(' ', '-')}"]
    generated = http.request(gw.url, method, path, body)
    ids = generated.header_all("x-request-id")
    assert len(ids) == 1 and HEX_ID.match(ids[0])


def test_a_client_that_gives_up_cancels_the_upstream_request(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Json(chat_completion(), delay_s=30))  # a long generation
    with pytest.raises(openai.APITimeoutError):
        openai_client(gw, timeout=0.5).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert fake.disconnected.wait(3), "the upstream request outlived its client"
    gw.metrics_when(lambda text: http.metric(text, "medic_gateway_requests_total", status_code="499") == 1)


def test_a_compressed_upstream_body_reaches_the_client_decoded(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, Json(gzip.compress(UPSTREAM_BODY), headers={"Content-Encoding": "gzip"}))
    response = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES})
    assert response.status == 200
    assert response.body == UPSTREAM_BODY
    assert response.header("content-encoding") is None
    assert response.header("content-length") == str(len(UPSTREAM_BODY))


def test_generated_request_ids_are_distinct_and_a_forked_process_never_repeats_its_parents() -> None:
    ids = [new_request_id() for _ in range(20_000)]  # more than one draw from the operating system
    assert len(set(ids)) == len(ids) and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child writes its next id and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    os.close(write)
    assert os.read(read, 64).decode() != new_request_id()
    os.close(read)


async def test_work_that_may_wait_for_the_upstream_runs_only_once_the_upstream_has_taken_a_while() -> None:
    """The request's watching rules run while a slow upstream works; an answer that comes sooner never waits
    behind them (the engine runs them after it)."""
    ran: list[str] = []

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    fast = ClientWatch(receive, lambda: ran.append("fast"))
    fast.stop()  # answered before WATCH_AFTER_S
    slow = ClientWatch(receive, lambda: ran.append("slow"))
    await asyncio.sleep(WATCH_AFTER_S * 3)
    slow.stop()
    assert ran == ["slow"]
