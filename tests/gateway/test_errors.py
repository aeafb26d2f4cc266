"""Errors, end to end: OpenAI-shaped bodies with the matching status, and the SDK's matching exception."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from config import (
    GatewayConfig,
    KeyConfig,
    ModelConfig,
    Route,
    ServerConfig,
    UpstreamConfig,
    single_upstream,
)
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, Stream, chat_chunks, closed_port, error

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Dose of amoxicillin for a 20 kg child?"}]


def assert_openai_error(response: http.RawResponse, status: int, code: str | None, type_: str | None = None) -> dict:
    """The body is exactly {"error": {message, type, param, code}}, with the given status and code."""
    assert response.status == status, response.body
    assert response.header("content-type") == "application/json"
    body = response.json()
    assert list(body) == ["error"]
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["code"] == code
    if type_ is not None:
        assert err["type"] == type_
    assert response.header("x-request-id")
    return dict(err)


def _chat(**fields: Any) -> bytes:
    return json.dumps({"model": "gpt-test", "messages": MESSAGES, **fields}).encode()


# ------------------------------------------------------------------------------- invalid requests


@pytest.mark.parametrize("body", [b"{nope", b"", b'{"model": "gpt-test",', b"\xff\xfe"], ids=repr)
def test_malformed_json_is_400(body: bytes, fake: FakeUpstream, gw: GatewayServer) -> None:
    response = http.request(gw.url, "POST", CHAT, body)
    assert_openai_error(response, 400, "invalid_json", "invalid_request_error")
    assert fake.requests == []


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"null", b"42"])
def test_a_body_that_is_not_an_object_is_400(body: bytes, fake: FakeUpstream, gw: GatewayServer) -> None:
    response = http.request(gw.url, "POST", CHAT, body)
    assert_openai_error(response, 400, "invalid_json", "invalid_request_error")
    assert fake.requests == []


@pytest.mark.parametrize("body", [b'{"messages": []}', b'{"model": "", "messages": []}', b'{"model": 3}'])
def test_missing_model_is_404_model_not_found(body: bytes, fake: FakeUpstream, gw: GatewayServer) -> None:
    err = assert_openai_error(http.request(gw.url, "POST", CHAT, body), 404, "model_not_found")
    assert err["param"] == "model"
    assert fake.requests == []


def test_sdk_raises_not_found_for_an_empty_model(gw: GatewayServer, openai_client: Client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(gw).chat.completions.create(model="", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_unknown_model_is_404_when_models_are_configured(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client
) -> None:
    config = GatewayConfig(
        upstreams={"u": UpstreamConfig(url=fake.url)}, models={"clinical": ModelConfig(routes=[Route(upstream="u")])}
    )
    gw = gateway(config)
    err = assert_openai_error(http.request(gw.url, "POST", CHAT, _chat(model="gpt-unknown")), 404, "model_not_found")
    assert err["param"] == "model"
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client(gw).chat.completions.create(model="gpt-unknown", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
    assert fake.requests == []
    openai_client(gw).chat.completions.create(model="clinical", messages=MESSAGES)
    assert len(fake.requests) == 1


@pytest.fixture
def small_gw(fake: FakeUpstream, gateway: Gateway) -> GatewayServer:
    return gateway(single_upstream(fake.url, server=ServerConfig(max_request_body_bytes=1024)))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(chunked: bool, fake: FakeUpstream, small_gw: GatewayServer) -> None:
    body = _chat(padding="x" * 2000)
    response = http.request(small_gw.url, "POST", CHAT, body, chunked=chunked)
    assert_openai_error(response, 413, "request_too_large", "invalid_request_error")
    assert fake.requests == []


def test_body_at_the_limit_is_accepted(fake: FakeUpstream, small_gw: GatewayServer) -> None:
    body = _chat(padding="")
    body = _chat(padding="x" * (1024 - len(body)))
    assert len(body) == 1024
    assert http.request(small_gw.url, "POST", CHAT, body, chunked=True).status == 200
    assert fake.last.body == body


def test_sdk_sees_413_as_a_status_error(small_gw: GatewayServer, openai_client: Client) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        openai_client(small_gw).chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x" * 4000}]
        )
    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


# ------------------------------------------------------------------------------------ gateway keys


@pytest.fixture
def keyed_gw(fake: FakeUpstream, gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> GatewayServer:
    monkeypatch.setenv("TEST_KEY_WARD7", "mgw-ward7-secret")
    monkeypatch.setenv("TEST_KEY_ICU", "mgw-icu-secret")
    keys = [KeyConfig(tenant="ward7", key_env="TEST_KEY_WARD7"), KeyConfig(tenant="icu", key_env="TEST_KEY_ICU")]
    return gateway(single_upstream(fake.url).model_copy(update={"keys": keys}))


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic mgw-ward7-secret", "Bearer "])
def test_missing_or_wrong_gateway_key_is_401(
    authorization: str | None, fake: FakeUpstream, keyed_gw: GatewayServer
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = http.request(keyed_gw.url, "POST", CHAT, _chat(), headers)
    assert_openai_error(response, 401, "invalid_api_key", "invalid_request_error")
    assert response.header("www-authenticate") == "Bearer"
    models = http.request(keyed_gw.url, "GET", "/v1/models", headers=headers)
    assert_openai_error(models, 401, "invalid_api_key")
    assert fake.requests == []


def test_gateway_keys_with_the_sdk(fake: FakeUpstream, keyed_gw: GatewayServer, openai_client: Client) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        openai_client(keyed_gw, api_key="sk-not-a-gateway-key").chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
        )
    assert caught.value.code == "invalid_api_key"
    assert fake.requests == []
    for key in ("mgw-ward7-secret", "mgw-ward7-secret", "mgw-icu-secret"):
        completion = openai_client(keyed_gw, api_key=key).chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert completion.choices[0].message.content
    assert len(fake.requests) == 3
    models = openai_client(keyed_gw, api_key="mgw-icu-secret").models.list()
    assert models.object == "list"
    name = "medic_gateway_requests_total"
    text = keyed_gw.metrics_when(lambda t: http.metric(t, name) == 4)
    assert http.metric(text, name, tenant="ward7", status_code="200") == 2
    assert http.metric(text, name, tenant="icu", status_code="200") == 1
    assert http.metric(text, name, tenant="", status_code="401") == 1


# ------------------------------------------------------------------------------- upstream errors


UPSTREAM_400 = (
    b'{"error": {"message": "This model\'s maximum context length is 8192 tokens.", '
    b'"type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}'
)
VLLM_422 = b'{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{}}]}'


def test_upstream_400_is_passed_through_with_its_body(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Json(UPSTREAM_400, status=400, headers={"x-upstream-hint": "ctx"}))
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert response.status == 400
    assert response.body == UPSTREAM_400
    assert response.header("x-upstream-hint") == "ctx"
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert len(fake.requests) == 2  # a 400 is never retried


def test_upstream_422_is_passed_through_with_its_body(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Json(VLLM_422, status=422))
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert (response.status, response.body) == (422, VLLM_422)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert caught.value.status_code == 422
    assert len(fake.requests) == 2


UPSTREAM_CLIENT_ERRORS = [
    (401, openai.AuthenticationError),
    (403, openai.PermissionDeniedError),
    (404, openai.NotFoundError),
]


@pytest.mark.parametrize(("status", "exception"), UPSTREAM_CLIENT_ERRORS)
def test_other_upstream_client_errors_are_passed_through(
    status: int, exception: type[Exception], fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, error(status, f"upstream {status}", code=f"upstream_{status}"))
    with pytest.raises(exception) as caught:
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert caught.value.code == f"upstream_{status}"
    assert len(fake.requests) == 1


def test_upstream_error_on_a_stream_request_is_json_not_a_stream(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Json(UPSTREAM_400, status=400))
    response = http.request(gw.url, "POST", CHAT, _chat(stream=True))
    assert (response.status, response.body) == (400, UPSTREAM_400)
    assert response.header("content-type") == "application/json"
    with pytest.raises(openai.BadRequestError):
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)


def _fast(url: str, **options: Any) -> GatewayConfig:
    upstream = UpstreamConfig(url=url, backoff_ms=5, backoff_max_ms=20, **options)
    return GatewayConfig(upstreams={"u": upstream}, models={"*": ModelConfig(routes=[Route(upstream="u")])})


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(stream: bool, fake: FakeUpstream, gateway: Gateway) -> None:
    fake.script(CHAT, Json(b"{}", delay_s=5) if not stream else Stream(chat_chunks(["late"]), delay_s=5))
    gw = gateway(_fast(fake.url, timeout_s=0.5))
    started = time.monotonic()
    response = http.request(gw.url, "POST", CHAT, _chat(stream=stream))
    elapsed = time.monotonic() - started
    assert_openai_error(response, 504, "upstream_timeout", "upstream_error")
    assert elapsed < 3, "the gateway waited past its timeout"
    assert len(fake.requests) == 1  # a timeout is not retried on the same upstream


def test_sdk_sees_504_as_a_server_error(fake: FakeUpstream, gateway: Gateway, openai_client: Client) -> None:
    fake.script(CHAT, Json(b"{}", delay_s=5))
    gw = gateway(_fast(fake.url, timeout_s=0.3))
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_unreachable_upstream_is_502(gateway: Gateway, openai_client: Client) -> None:
    gw = gateway(_fast(f"http://127.0.0.1:{closed_port()}/v1", retries=1))
    response = http.request(gw.url, "POST", CHAT, _chat())
    assert_openai_error(response, 502, "upstream_unreachable", "upstream_error")
    assert "127.0.0.1" not in response.json()["error"]["message"]  # no internal addresses leak to clients
    with pytest.raises(openai.InternalServerError) as caught:
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert caught.value.status_code == 502


# ------------------------------------------------------------------------------- paths and methods


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing"), ("POST", "/v1/nothing"), ("GET", "/"), ("POST", "/v1/responses"), ("GET", "/v1/chat")],
)
def test_unknown_path_is_404(method: str, path: str, fake: FakeUpstream, gw: GatewayServer) -> None:
    body = _chat() if method == "POST" else None
    assert_openai_error(http.request(gw.url, method, path, body), 404, "not_found", "invalid_request_error")
    assert fake.requests == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", CHAT),
        ("PUT", CHAT),
        ("DELETE", "/v1/embeddings"),
        ("GET", "/v1/completions"),
        ("POST", "/v1/models"),
        ("POST", "/metrics"),
        ("DELETE", "/healthz"),
    ],
)
def test_wrong_method_is_405(method: str, path: str, fake: FakeUpstream, gw: GatewayServer) -> None:
    response = http.request(gw.url, method, path)
    assert_openai_error(response, 405, "method_not_allowed", "invalid_request_error")
    assert response.header("allow") == ("POST" if path in (CHAT, "/v1/embeddings", "/v1/completions") else "GET, HEAD")
    assert fake.requests == []


def test_sdk_raises_for_unknown_paths_and_methods(gw: GatewayServer, openai_client: Client) -> None:
    client = openai_client(gw)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.get("/nothing-here", cast_to=object)
    assert not_found.value.code == "not_found"
    with pytest.raises(openai.APIStatusError) as not_allowed:
        client.get("/chat/completions", cast_to=object)
    assert not_allowed.value.status_code == 405
    assert not_allowed.value.code == "method_not_allowed"


def test_a_gateway_bug_is_an_openai_shaped_500_that_logs_no_content(
    fake: FakeUpstream, gw: GatewayServer, caplog: pytest.LogCaptureFixture
) -> None:
    phi = "Patient Jane Doe, MRN 123456"

    async def broken(*args: object) -> None:
        raise RuntimeError(phi)  # the traceback shows this line, not the value

    gw.app.proxy.handle = broken  # type: ignore[method-assign]
    response = http.request(gw.url, "POST", CHAT, b'{"model":"gpt-test","messages":[]}')
    assert_openai_error(response, 500, "internal_error", "server_error")
    assert "RuntimeError" in caplog.text
    assert "Jane Doe" not in caplog.text and "123456" not in caplog.text
