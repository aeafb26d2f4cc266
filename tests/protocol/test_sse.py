from __future__ import annotations

import orjson
import pytest

from protocol.sse import EventSplitter, StreamSummary, drop_usage_null, event_data

CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":"fp",'
    b'"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
USAGE = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}\n\n'
)


def test_splitter_returns_whole_events_across_arbitrary_cuts() -> None:
    stream = CHUNK + USAGE + b"data: [DONE]\n\n"
    for cut in range(1, len(stream)):
        splitter = EventSplitter()
        events = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        assert events == [CHUNK, USAGE, b"data: [DONE]\n\n"]
        assert splitter.rest() == b""


def test_splitter_handles_crlf_and_keeps_trailing_partial() -> None:
    splitter = EventSplitter()
    assert splitter.feed(b"data: a\r\n\r\ndata: b") == [b"data: a\r\n\r\n"]
    assert splitter.rest() == b"data: b"


def test_event_data_joins_lines_and_ignores_comments() -> None:
    assert event_data(b": keep-alive\n\n") is None
    assert event_data(b"data: x\ndata: y\n\n") == b"x\ny"
    assert event_data(b"event: e\ndata:{}\n\n") == b"{}"


@pytest.mark.parametrize(
    "event",
    [
        CHUNK,
        b'data: {"usage": null, "id": "x", "choices": []}\n\n',
        b'data: {"id": "x", "usage" : null , "choices": [{"index": 0}]}\n\n',
    ],
)
def test_drop_usage_null_removes_only_that_member(event: bytes) -> None:
    before = orjson.loads(event_data(event) or b"")
    after = orjson.loads(event_data(drop_usage_null(event)) or b"")
    del before["usage"]
    assert after == before


def test_drop_usage_null_leaves_text_that_mentions_usage_alone() -> None:
    event = b'data: {"choices":[{"delta":{"content":"\\"usage\\":null"}}]}\n\n'
    assert drop_usage_null(event) == event


def test_summary_strips_what_the_gateway_added_and_learns_usage() -> None:
    summary = StreamSummary(strip_usage=True)
    forwarded = [summary.inspect(e) for e in (CHUNK, USAGE, b"data: [DONE]\n\n")]
    assert forwarded[1] is None
    assert b"usage" not in (forwarded[0] or b"")
    assert forwarded[2] == b"data: [DONE]\n\n"
    assert summary.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert summary.done and summary.content == {0: ["Hi"]} and summary.model == "m"


def test_summary_passes_everything_when_the_client_asked_for_usage() -> None:
    summary = StreamSummary(strip_usage=False)
    assert [summary.inspect(e) for e in (CHUNK, USAGE)] == [CHUNK, USAGE]
    assert summary.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


def test_summary_forwards_garbage_untouched() -> None:
    summary = StreamSummary(strip_usage=True)
    assert summary.inspect(b"data: {not json\n\n") == b"data: {not json\n\n"
    assert summary.inspect(b"data: [1,2]\n\n") == b"data: [1,2]\n\n"


def test_summary_records_finish_reasons_per_choice() -> None:
    summary = StreamSummary(strip_usage=False)
    summary.inspect(b'data: {"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}\n\n')
    summary.inspect(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    assert summary.finish_reasons == {1: "length", 0: "stop"}
