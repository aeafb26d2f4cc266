"""Streamed chat completions end to end: events relayed as they arrive, byte for byte, usage handled to spec.

What the client receives is compared with the exact bytes the fake upstream writes (``Stream.wire``):
with ``include_usage`` as the client asked, whatever the gateway itself asked of the upstream.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from config import PoliciesConfig, single_upstream
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import (
    COMPACT,
    CREATED,
    SPACED,
    Abort,
    FakeUpstream,
    Gate,
    Hang,
    Sleep,
    Stream,
    chat_chunks,
)

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Summarise the discharge letter."}]
USAGE = {"prompt_tokens": 31, "completion_tokens": 4, "total_tokens": 35}


def _body(**fields: Any) -> bytes:
    return json.dumps({"model": "gpt-test", "messages": MESSAGES, "stream": True, **fields}).encode()


def _stream(**options: Any) -> Stream:
    return Stream(chat_chunks(["Patient", " stable", "."]), usage=dict(USAGE), **options)


def _tool_chunks() -> list[dict[str, Any]]:
    base = {
        "id": "chatcmpl-tools",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": "gpt-test",
        "system_fingerprint": "fp_t",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    return [
        chunk({"role": "assistant", "content": None}),
        chunk(call(0, id="call_a", type="function", function={"name": "lookup_lab_reference", "arguments": ""})),
        chunk(call(0, function={"arguments": '{"test": "pot'})),
        chunk(call(0, function={"arguments": 'assium"}'})),
        chunk(call(1, id="call_b", type="function", function={"name": "lookup_drug", "arguments": '{"name":'})),
        chunk(call(1, function={"arguments": ' "ramipril"}'})),
        chunk({}, "tool_calls"),
    ]


# ------------------------------------------------------------------------------------ byte for byte


def test_client_that_asks_for_usage_gets_exactly_the_upstream_bytes(fake: FakeUpstream, gw: GatewayServer) -> None:
    stream = _stream()
    fake.script(CHAT, stream)
    body = _body(stream_options={"include_usage": True})
    response = http.request(gw.url, "POST", CHAT, body)
    assert response.status == 200
    assert response.header("content-type") == "text/event-stream"
    assert len(response.header_all("x-request-id")) == 1
    assert response.body == stream.wire(include_usage=True)
    assert fake.last.body == body  # the client asked itself: its bytes go upstream untouched
    last = http.chunks_of(response.body)[-1]
    assert last["choices"] == [] and last["usage"] == USAGE


@pytest.mark.parametrize(
    "style",
    [{"separators": COMPACT}, {"separators": SPACED}, {"usage_first": True}, {"end": b"\r\n\r\n"}],
    ids=["compact", "spaced", "usage-first", "crlf"],
)
def test_client_that_did_not_ask_sees_the_stream_it_would_have_seen_without_the_gateway(
    style: dict[str, Any], fake: FakeUpstream, gw: GatewayServer
) -> None:
    stream = _stream(**style)
    fake.script(CHAT, stream)
    response = http.request(gw.url, "POST", CHAT, _body())
    assert response.status == 200
    assert fake.last.json["stream_options"] == {"include_usage": True}  # the gateway asked for usage
    assert response.body == stream.wire(include_usage=False)
    chunks = http.chunks_of(response.body)
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["choices"] for chunk in chunks)
    text = gw.metrics_when(lambda t: http.metric(t, "medic_gateway_requests_total") == 1)
    assert http.metric(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 31
    assert http.metric(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="output") == 4


def test_usage_explicitly_declined_is_still_asked_for_and_stripped(fake: FakeUpstream, gw: GatewayServer) -> None:
    stream = _stream()
    fake.script(CHAT, stream)
    response = http.request(gw.url, "POST", CHAT, _body(stream_options={"include_usage": False}))
    assert fake.last.json["stream_options"] == {"include_usage": True}
    assert fake.last.json["messages"] == MESSAGES
    assert response.body == stream.wire(include_usage=False)


def test_sdk_stream_with_and_without_usage(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    fake.script(CHAT, _stream())
    client = openai_client(gw)
    plain = list(client.chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in plain) == "Patient stable."
    assert all(c.usage is None and c.choices for c in plain)
    assert plain[-1].choices[0].finish_reason == "stop"
    metered = list(
        client.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert len(metered) == len(plain) + 1
    assert metered[-1].choices == []
    assert metered[-1].usage is not None and metered[-1].usage.prompt_tokens == 31
    assert [fake.requests[i].json["stream_options"] for i in (0, 1)] == [{"include_usage": True}] * 2


@pytest.mark.parametrize("include_usage", [True, False])
def test_tool_call_chunks_pass_through_unchanged(include_usage: bool, fake: FakeUpstream, gw: GatewayServer) -> None:
    stream = Stream(_tool_chunks(), usage=dict(USAGE))
    fake.script(CHAT, stream)
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    response = http.request(
        gw.url, "POST", CHAT, _body(tools=[{"type": "function", "function": {"name": "x"}}], **options)
    )
    assert response.body == stream.wire(include_usage=include_usage)


def test_sdk_assembles_relayed_tool_calls(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    fake.script(CHAT, Stream(_tool_chunks()))
    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    finish = None
    for chunk in openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True):
        for call in chunk.choices[0].delta.tool_calls or []:
            assert call.function is not None
            if call.function.name:
                names[call.index] = call.function.name
            arguments[call.index] = arguments.get(call.index, "") + (call.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert names == {0: "lookup_lab_reference", 1: "lookup_drug"}
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: {"test": "potassium"}, 1: {"name": "ramipril"}}
    assert finish == "tool_calls"


def test_done_is_last_and_nothing_follows(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, _stream())
    response = http.request(gw.url, "POST", CHAT, _body())
    data = http.sse_data(response.body)
    assert data.count("[DONE]") == 1
    assert data[-1] == "[DONE]"
    assert response.body.endswith(b"\n\ndata: [DONE]\n\n")


def test_text_completion_stream(fake: FakeUpstream, gw: GatewayServer) -> None:
    chunks = [
        {
            "id": "cmpl-s",
            "object": "text_completion",
            "created": CREATED,
            "model": "gpt-test-instruct",
            "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}],
        }
        for piece, reason in (("Hypo", None), ("kalaemia", None), ("", "length"))
    ]
    stream = Stream(list(chunks))
    fake.script("/v1/completions", stream)
    body = b'{"model":"gpt-test-instruct","prompt":"Low potassium:","stream":true,"max_tokens":2}'
    response = http.request(gw.url, "POST", "/v1/completions", body)
    assert fake.last.json["stream_options"] == {"include_usage": True}
    assert response.body == stream.wire(include_usage=False)


def test_events_split_across_writes_and_comments_are_relayed_intact(fake: FakeUpstream, gw: GatewayServer) -> None:
    first, second, *rest = chat_chunks(["a", "b"])
    whole = Stream([first, second, *rest], usage=None)
    second_bytes = b"data: " + json.dumps(second, separators=COMPACT).encode() + b"\n\n"
    stream = Stream([b": keep-alive\n\n", first, second_bytes[:17], Sleep(0.05), second_bytes[17:], *rest], usage=None)
    fake.script(CHAT, stream)
    response = http.request(gw.url, "POST", CHAT, _body())
    assert response.body == b": keep-alive\n\n" + whole.wire(include_usage=False)


# -------------------------------------------------------------------------------- as they arrive


@pytest.fixture
def bare(fake: FakeUpstream, gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """The gateway with no policy pack, so no stream rule in force: the relay alone, never holding chunks back."""
    return gateway(single_upstream(fake.url).model_copy(update={"policies": PoliciesConfig(packs=[])}))


def test_first_chunk_reaches_the_client_while_the_upstream_waits(
    fake: FakeUpstream, bare: GatewayServer, openai_client: Client
) -> None:
    release = threading.Event()
    role, first, *rest = chat_chunks(["Patient", " stable."])
    fake.script(CHAT, Stream([role, first, Gate(release, timeout_s=8), *rest]))
    # A gateway that buffered would hold the first chunk until the gate opens: the client would time out.
    stream = openai_client(bare, timeout=4.0).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.content == "Patient"
    assert not release.is_set()
    release.set()
    remaining = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in remaining) == " stable."


def test_each_event_is_forwarded_as_soon_as_it_arrives(fake: FakeUpstream, bare: GatewayServer) -> None:
    chunks = chat_chunks(["one", " two", " three"])
    gates = [threading.Event() for _ in chunks]
    items: list[Any] = []
    for chunk, gate in zip(chunks, gates, strict=True):
        items += [chunk, Gate(gate, timeout_s=8)]
    stream = Stream(items, usage=None)
    fake.script(CHAT, stream)
    expected = http.sse_events(stream.wire(include_usage=False))
    reader = http.StreamReader(bare.url, CHAT, _body(), timeout_s=4.0)
    try:
        for event, gate in zip(expected, gates, strict=False):
            assert reader.next_event() == event  # arrives while the upstream waits at the gate after it
            gate.set()
        assert reader.next_event() == b"data: [DONE]\n\n"
        assert reader.next_event() is None
    finally:
        reader.close()


def test_chunks_keep_the_upstream_pace(fake: FakeUpstream, bare: GatewayServer, openai_client: Client) -> None:
    fake.script(CHAT, Stream(chat_chunks(["a", "b", "c"]), delay_s=0.15))  # 0.6 s from the first to the last
    started = time.monotonic()
    arrivals = []
    for _ in openai_client(bare).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True):
        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5
    # Relayed one by one: the first came long before the last (a buffering relay delivers all at the end).
    assert arrivals[-1] - arrivals[0] > 0.4


# ----------------------------------------------------------------------------------- disconnects


def test_client_disconnect_mid_stream_cancels_the_upstream_request(
    fake: FakeUpstream, bare: GatewayServer, openai_client: Client
) -> None:
    role, first, *_ = chat_chunks(["Patient"])
    fake.script(CHAT, Stream([role, first, Hang()]))
    stream = openai_client(bare).chat.completions.create(model="gpt-disconnect", messages=MESSAGES, stream=True)
    chunks = iter(stream)
    next(chunks)
    assert next(chunks).choices[0].delta.content == "Patient"
    assert not fake.disconnected.is_set()
    stream.close()
    assert fake.disconnected.wait(3), "the upstream request was not cancelled"
    assert fake.last.disconnected
    bare.metrics_when(lambda t: http.metric(t, "medic_gateway_client_disconnects_total", model="gpt-disconnect") == 1)


def test_raw_socket_close_mid_stream_cancels_the_upstream_request(fake: FakeUpstream, bare: GatewayServer) -> None:
    role, *_ = chat_chunks([])
    fake.script(CHAT, Stream([role, Hang()]))
    reader = http.StreamReader(bare.url, CHAT, _body())
    assert reader.next_event() is not None
    reader.close()
    assert fake.disconnected.wait(3)
    bare.metrics_when(lambda text: http.metric(text, "medic_gateway_client_disconnects_total") == 1)


def test_client_disconnect_before_the_first_byte_cancels_the_upstream_request(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Client
) -> None:
    fake.script(CHAT, Hang())  # a model still in its queue or prefill: no headers yet
    with pytest.raises(openai.APITimeoutError):
        openai_client(gw, timeout=0.5).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True)
    assert fake.disconnected.wait(3), "the upstream request outlived its client"
    gw.metrics_when(lambda text: http.metric(text, "medic_gateway_requests_total", status_code="499") == 1)
    gw.metrics_when(lambda text: http.metric(text, "medic_gateway_client_disconnects_total") == 1)


def test_upstream_that_breaks_mid_stream_ends_the_client_stream_with_an_error_event(
    fake: FakeUpstream, gw: GatewayServer
) -> None:
    role, first, *_ = chat_chunks(["Patient"])
    stream = Stream([role, first, Abort()])
    fake.script(CHAT, stream)
    started = time.monotonic()
    response = http.request(gw.url, "POST", CHAT, _body(stream_options={"include_usage": True}))
    assert time.monotonic() - started < 5
    assert response.status == 200
    sent = stream.wire(include_usage=True)
    assert response.body.startswith(sent)
    assert b"[DONE]" not in response.body
    (error,) = http.chunks_of(response.body[len(sent) :])
    assert error["error"]["code"] == "upstream_stream_broken"
    duration = "gen_ai_server_request_duration_seconds_count"
    gw.metrics_when(lambda text: http.metric(text, duration, error_type="upstream_stream_broken") == 1)
