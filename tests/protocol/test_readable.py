"""protocol/readable.py: every field of an answer whose text reaches a reader, complete or streamed."""

from __future__ import annotations

from protocol.readable import fields, set_field


def test_every_readable_field_of_a_message_is_found_and_can_be_rewritten() -> None:
    choice = {"index": 0, "message": {
        "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "u"}}],
        "refusal": "b", "reasoning_content": "c", "reasoning": "d",
        "tool_calls": [{"id": "x", "type": "function", "function": {"name": "n", "arguments": "e"}}],
        "function_call": {"name": "n", "arguments": "f"}, "audio": {"id": "a", "data": "", "transcript": "g"},
    }}  # fmt: skip
    found = fields(choice)
    assert sorted(text for _, _, text in found) == list("abcdefg")
    for _, path, text in found:
        set_field(choice, path, text.upper())
    assert sorted(text for _, _, text in fields(choice)) == list("ABCDEFG")
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "n"  # names are not text for a reader


def test_a_chunks_tool_calls_are_keyed_by_their_index_not_their_place() -> None:
    chunk = {"index": 0, "delta": {"tool_calls": [{"index": 3, "function": {"arguments": '{"a"'}}]}}
    ((key, path, _),) = fields(chunk)
    assert key == ("tool_calls", 3, "arguments") and path == ("delta", "tool_calls", 0, "function", "arguments")
    assert fields({"index": 0, "text": "legacy"}) == [(("text",), ("text",), "legacy")]


def test_what_is_not_text_is_not_a_field() -> None:
    assert fields({"index": 0, "message": {"content": None, "tool_calls": "junk"}}) == []
    assert fields("junk") == []
