"""An upstream that behaves unusually gets nothing past the pack: the cases an attacker (or a broken upstream)
would write, sent through the gateway with the official SDK as the client and a real HTTP fake upstream.

Each answer carries an overdose (or an identifier). Either the pack reads it where the client would and blocks
(or redacts) it, or the gateway cannot read the answer and it does not go out: a 502 ``upstream_unreadable`` for
a complete answer, an error event in a stream. A rule that declares ``fail_open`` lets the unreadable through,
and the audit says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from config import GatewayConfig, PoliciesConfig, single_upstream
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import Abort, FakeUpstream, Json, Stream, chat_chunks, chat_completion

OVERDOSE = "For the pain, take 3000 mg of acetaminophen every 4 hours until it settles."
LEAK = "Her record number is MRN 4455667; call (617) 555-0143."
ASK = [{"role": "user", "content": "My knee hurts after a fall. What can I take?"}]
CHAT = "/v1/chat/completions"

Start = Callable[..., GatewayServer]


@pytest.fixture
def fake(fake_upstream: Callable[[], FakeUpstream]) -> FakeUpstream:
    return fake_upstream()


@pytest.fixture
def gw(fake: FakeUpstream, gateway: Start, tmp_path: Path) -> GatewayServer:
    return gateway(configured(fake, tmp_path))


def configured(fake: FakeUpstream, tmp_path: Path, **policies: Any) -> GatewayConfig:
    settings = PoliciesConfig(audit_path=str(tmp_path / "audit.jsonl"), **policies)
    return single_upstream(fake.url).model_copy(update={"policies": settings})


def client(gw: GatewayServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def blocked(gw: GatewayServer, **extra: Any) -> dict[str, Any]:
    """The error body of a non-streamed call the gateway refused (any 4xx/5xx the SDK raises)."""
    with pytest.raises(openai.APIStatusError) as raised:
        client(gw).chat.completions.create(model="m", messages=ASK, **extra)  # type: ignore[arg-type]
    body = raised.value.body
    assert isinstance(body, dict)
    return body


def filtered(gw: GatewayServer, **extra: Any) -> str:
    """The rule a complete answer was withheld by: 200, every choice a content_filter finish without content."""
    answer = client(gw).chat.completions.create(model="m", messages=ASK, **extra)  # type: ignore[arg-type]
    assert {c.finish_reason for c in answer.choices} == {"content_filter"}
    assert all(c.message.content is None and not c.message.tool_calls for c in answer.choices)
    return str((answer.model_extra or {})["medic_policy"]["rule"])


def streamed(gw: GatewayServer) -> tuple[str, BaseException | None]:
    """The text a streaming client saw, and what the SDK raised (None: the stream ended normally)."""
    text = []
    try:
        for chunk in client(gw).chat.completions.create(model="m", messages=ASK, stream=True):  # type: ignore[arg-type]
            for choice in chunk.choices:
                delta = choice.delta
                text.append(delta.content or "")
                text += [c.function.arguments or "" for c in delta.tool_calls or () if c.function]
    except openai.APIError as error:
        return "".join(text), error
    return "".join(text), None


# ------------------------------------------------------------------- answers the gateway cannot read


def test_json_with_nan_is_read_as_the_sdk_reads_it_and_blocked(fake: FakeUpstream, gw: GatewayServer) -> None:
    body = json.dumps(chat_completion(OVERDOSE))[:-1] + ',"score":NaN}'
    fake.script(CHAT, Json(body.encode()))
    assert filtered(gw) == "dose-above-max"


def test_json_behind_a_byte_order_mark_is_read_and_blocked(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, Json(b"\xef\xbb\xbf" + json.dumps(chat_completion(OVERDOSE)).encode()))
    assert filtered(gw) == "dose-above-max"


@pytest.mark.parametrize(
    "body, content_type",
    [
        (OVERDOSE.encode(), "text/plain"),  # not JSON
        (b"data: " + json.dumps(chat_completion(OVERDOSE)).encode() + b"\n\n", "text/event-stream"),  # unasked SSE
        (json.dumps({"choices": OVERDOSE}).encode(), "application/json"),  # not an OpenAI answer
        (json.dumps({"choices": [OVERDOSE]}).encode(), "application/json"),
    ],
    ids=["plain-text", "unasked-event-stream", "choices-a-string", "choice-a-string"],
)
def test_an_answer_no_check_can_read_fails_closed_and_is_audited(
    fake: FakeUpstream, gw: GatewayServer, tmp_path: Path, body: bytes, content_type: str
) -> None:
    fake.script(CHAT, Json(body, content_type=content_type))
    error = blocked(gw)
    assert (error["type"], error["code"]) == ("upstream_error", "upstream_unreadable")
    assert "3000" not in json.dumps(error)
    entries = [e for e in audit(tmp_path) if e["check"] == "unreadable"]
    assert entries and {e["mode"] for e in entries} == {"fail_closed"}
    text = gw.metrics_when(lambda t: http.metric(t, "medic_gateway_requests_total", status_code="502") == 1)
    assert http.metric(text, "medic_policy_decisions_total", rule="dose-above-max", mode="fail_closed") >= 1


def test_a_pack_that_declares_fail_open_lets_the_unreadable_through_and_says_so(
    fake: FakeUpstream, gateway: Start, tmp_path: Path
) -> None:
    pack = tmp_path / "open.yaml"
    pack.write_text("name: open\nrules:\n  - {id: dose, stages: [response, stream], check: dose_above_max, "
                    "action: block, fail_open: true}\n")  # fmt: skip
    gw = gateway(configured(fake, tmp_path, packs=[str(pack)]))
    fake.script(CHAT, Json(b"plain words, no JSON", content_type="text/plain"))
    response = http.request(gw.url, "POST", CHAT, json.dumps({"model": "m", "messages": ASK}).encode())
    assert (response.status, response.body) == (200, b"plain words, no JSON")
    assert [(e["rule"], e["mode"], e["check"]) for e in audit(tmp_path)] == [("dose", "fail_open", "unreadable")]


def test_an_html_error_page_becomes_an_openai_error(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, Json(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"))
    with pytest.raises(openai.APIStatusError) as raised:
        client(gw).chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    assert raised.value.status_code == 502
    assert isinstance(raised.value.body, dict) and raised.value.body["code"] == "upstream_error"


# ------------------------------------------------------------------------------ every readable field


def _message(**fields: Any) -> dict[str, Any]:
    body = chat_completion("Here is what I found.")
    body["choices"][0]["message"].update(fields)
    return body


FIELDS = {
    "tool-call-arguments": _message(
        tool_calls=[
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "prescribe", "arguments": json.dumps({"instructions": OVERDOSE})},
            }
        ]
    ),
    "reasoning-content": _message(reasoning_content=OVERDOSE),
    "reasoning": _message(reasoning=OVERDOSE),
    "refusal": _message(refusal=OVERDOSE),
    "content-parts": _message(content=[{"type": "text", "text": OVERDOSE}]),
    "audio-transcript": _message(audio={"id": "a1", "data": "", "expires_at": 0, "transcript": OVERDOSE}),
    "function-call": _message(function_call={"name": "f", "arguments": json.dumps({"say": OVERDOSE})}),
    "second-choice": {
        **chat_completion("Rest it."),
        "choices": [
            chat_completion("Rest it.")["choices"][0],
            {"index": 1, "message": {"role": "assistant", "content": OVERDOSE}, "finish_reason": "stop"},
        ],
    },
}


@pytest.mark.parametrize("answer", FIELDS.values(), ids=FIELDS.keys())
def test_an_overdose_in_any_readable_field_is_blocked(
    fake: FakeUpstream, gw: GatewayServer, answer: dict[str, Any]
) -> None:
    fake.script(CHAT, Json(answer))
    assert filtered(gw) == "dose-above-max"


def test_an_identifier_in_tool_call_arguments_is_redacted_there(fake: FakeUpstream, gw: GatewayServer) -> None:
    arguments = json.dumps({"note": LEAK})
    fake.script(CHAT, Json(_message(tool_calls=[{"id": "c1", "type": "function",
                                                  "function": {"name": "file", "arguments": arguments}}])))  # fmt: skip
    answer = client(gw).chat.completions.create(model="m", messages=ASK)  # type: ignore[arg-type]
    calls = answer.choices[0].message.tool_calls
    assert calls is not None
    sent = calls[0].function.arguments  # type: ignore[union-attr]
    assert "4455667" not in sent and "555-0143" not in sent and "[redacted]" in sent


# ----------------------------------------------------------------------------------- stream framing


def test_a_stream_answered_whole_is_checked_whole(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, Json(chat_completion(OVERDOSE)))
    response = http.request(gw.url, "POST", CHAT, json.dumps({"model": "m", "messages": ASK, "stream": True}).encode())
    assert response.status == 200 and b"3000" not in response.body
    assert json.loads(response.body)["choices"][0]["finish_reason"] == "content_filter"


def test_an_app_that_wants_errors_gets_openai_s_400_instead(fake: FakeUpstream, gateway: Start, tmp_path: Path) -> None:
    gw = gateway(configured(fake, tmp_path, blocked_answer="error"))
    fake.script(CHAT, Json(chat_completion(OVERDOSE)))
    error = blocked(gw)
    assert error["code"] == "content_policy_violation" and "dose-above-max" in error["message"]


def test_a_last_event_without_its_blank_line_is_read_and_blocked(fake: FakeUpstream, gw: GatewayServer) -> None:
    role, *_ = chat_chunks(["x"])
    last = {**role, "choices": [{"index": 0, "delta": {"content": OVERDOSE}, "finish_reason": "stop"}]}
    fake.script(CHAT, Stream([role, b"data: " + json.dumps(last).encode()], done=False))
    text, _ = streamed(gw)
    assert "3000" not in text


def test_a_stream_with_bare_carriage_returns_is_split_and_blocked(fake: FakeUpstream, gw: GatewayServer) -> None:
    fake.script(CHAT, Stream(chat_chunks([OVERDOSE[:30], OVERDOSE[30:]]), end=b"\r\r"))
    text, _ = streamed(gw)
    assert "3000" not in text and "acetaminophen" not in text


def test_an_event_no_check_can_read_ends_the_stream_with_an_error(fake: FakeUpstream, gw: GatewayServer) -> None:
    role, *_ = chat_chunks(["x"])
    fake.script(CHAT, Stream([role, b"data: take 3000 mg of acetaminophen every 4 hours\n\n"]))
    text, error = streamed(gw)
    assert "3000" not in text
    assert isinstance(error, openai.APIError) and "could not read" in str(error)


def test_a_stream_cut_mid_answer_raises_in_the_client_instead_of_ending_clean(
    fake: FakeUpstream, gw: GatewayServer
) -> None:
    role, first, *_ = chat_chunks(["The dose is", " 500 mg"])
    fake.script(CHAT, Stream([role, first, Abort()]))
    text, error = streamed(gw)
    assert text == "The dose is"
    assert isinstance(error, openai.APIError) and "ended before the answer was complete" in str(error)


def test_an_overdose_in_streamed_tool_call_arguments_is_stopped(fake: FakeUpstream, gw: GatewayServer) -> None:
    role, *_ = chat_chunks(["x"])
    pieces = [OVERDOSE[i : i + 12] for i in range(0, len(OVERDOSE), 12)]
    calls = [{**role, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
        "arguments": piece}}]}, "finish_reason": None}]} for piece in pieces]  # fmt: skip
    fake.script(CHAT, Stream([role, *calls]))
    text, _ = streamed(gw)
    assert "3000" not in text and "every 4 hours" not in text


def test_a_blocked_stream_gives_every_choice_its_finish_reason(fake: FakeUpstream, gw: GatewayServer) -> None:
    role, *_ = chat_chunks(["x"])
    chunks = [role]
    for a, b in zip(["Rest it ", "and ice it. "], [OVERDOSE[:40], OVERDOSE[40:]], strict=True):
        chunks.append({**role, "choices": [{"index": 0, "delta": {"content": a}, "finish_reason": None},
                                           {"index": 1, "delta": {"content": b}, "finish_reason": None}]})  # fmt: skip
    fake.script(CHAT, Stream(chunks))
    response = http.request(gw.url, "POST", CHAT, json.dumps({"model": "m", "messages": ASK, "stream": True,
                                                              "n": 2}).encode())  # fmt: skip
    finished = {c["index"]: c["finish_reason"] for chunk in http.chunks_of(response.body)
                for c in chunk.get("choices", ()) if c.get("finish_reason")}  # fmt: skip
    assert finished == {0: "content_filter", 1: "content_filter"}
    assert b"3000" not in response.body


def test_a_blocked_stream_still_ends_with_the_usage_chunk_the_client_asked_for(
    fake: FakeUpstream, gw: GatewayServer
) -> None:
    fake.script(CHAT, Stream(chat_chunks([OVERDOSE[:14], OVERDOSE[14:40], OVERDOSE[40:], " Rest as well."])))
    chunks = list(client(gw).chat.completions.create(  # type: ignore[call-overload]
        model="m", messages=ASK, stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "3000" not in text and "Rest as well" not in text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["content_filter"]
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 18  # the upstream's own count


@pytest.mark.parametrize(("hold", "seen"), [("finding", "Rest it and ice it. For the pain, take "),
                                            ("sentence", "Rest it and ice it.")])  # fmt: skip
def test_stream_hold_says_whether_the_words_of_a_blocked_sentence_before_its_dose_leave(
    fake: FakeUpstream, gateway: Start, tmp_path: Path, hold: str, seen: str
) -> None:
    answer = "Rest it and ice it. " + OVERDOSE
    fake.script(CHAT, Stream(chat_chunks([answer[i : i + 4] for i in range(0, len(answer), 4)])))
    text, error = streamed(gateway(configured(fake, tmp_path, stream_hold=hold)))
    assert error is None and text == seen
    assert [(d["rule"], d["action"]) for d in audit(tmp_path)] == [("dose-above-max", "block")]
