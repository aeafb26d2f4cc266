"""Server-sent events from OpenAI-compatible upstreams: split, inspect, and (only when needed) edit.

The relay forwards each event's bytes exactly as the upstream sent them. The one edit it ever makes is to
undo its own request for usage (``stream_options.include_usage``) when the client did not ask for it: the
usage-only chunk is withheld and the ``"usage": null`` member that OpenAI adds to every other chunk is cut
out of the bytes, so the client sees exactly the stream it would have seen without the gateway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

# A blank line ends an event; a line ends with CRLF, LF or a bare CR (the SSE specification allows all three).
_BOUNDARY = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?![\n]))")
# Inside a JSON string every quote is escaped, so an unescaped `,"usage":null` is always structure.
_USAGE_NULL_AFTER = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])')
_USAGE_NULL_FIRST = re.compile(rb'(?<=\{)\s*"usage"\s*:\s*null\s*,')
DONE = b"[DONE]"


class EventSplitter:
    """Cuts a byte stream into complete SSE events, each with its terminating blank line."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data if self._buffer else data
        events = []
        start = 0
        while (match := _BOUNDARY.search(buffer, start)) is not None:
            events.append(buffer[start : match.end()])
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        """Bytes after the last complete event (an upstream that ended without a blank line)."""
        rest, self._buffer = self._buffer, b""
        return rest

    def last(self) -> bytes | None:
        """What is left when the stream ends, as a complete event (the blank line it lacked added), or None: the
        stream's last event is read and checked like every other, never passed on as raw bytes."""
        rest = self.rest()
        if not rest.strip():
            return None
        return rest.rstrip(b"\r\n") + b"\n\n"


def error_event(message: str, code: str, type_: str = "upstream_error") -> bytes:
    """An error inside a stream, as OpenAI sends one: the official SDKs raise it (``APIError``) instead of ending
    the stream as if it were complete."""
    error = {"message": message, "type": type_, "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def event_data(event: bytes) -> bytes | None:
    """The joined ``data:`` field of an event, or None for comments and data-less events."""
    parts = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


def drop_usage_null(event: bytes) -> bytes:
    """Remove the top-level ``"usage": null`` member from a chunk event's bytes."""
    matches = list(_USAGE_NULL_AFTER.finditer(event))
    if matches:
        last = matches[-1]
        return event[: last.start()] + event[last.end() :]
    return _USAGE_NULL_FIRST.sub(b"", event, count=1)


@dataclass(slots=True)
class StreamSummary:
    """What the gateway learns from a stream as it passes: enough for metrics, metering and samples."""

    strip_usage: bool
    events: int = 0
    done: bool = False
    usage: dict[str, Any] | None = None
    model: str | None = None
    finish_reasons: dict[int, str] = field(default_factory=dict)
    content: dict[int, list[str]] = field(default_factory=dict)

    def inspect(self, event: bytes) -> bytes | None:
        """Return the bytes to forward for this event (None: withhold it), learning from it on the way."""
        data = event_data(event)
        if data is None:
            return event
        if data.strip() == DONE:
            self.done = True
            return event
        self.events += 1
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return event  # not ours to judge: pass it on untouched
        if not isinstance(chunk, dict):
            return event
        return self._learn(chunk, event)

    def _learn(self, chunk: dict[str, Any], event: bytes) -> bytes | None:
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list):
            self._learn_choices(choices)
        if not self.strip_usage or "usage" not in chunk:
            return event
        if usage and choices == []:
            return None
        if usage is None:
            return drop_usage_null(event)
        return event

    def _learn_choices(self, choices: list[Any]) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reasons[index] = reason
            delta = choice.get("delta")
            text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
            if isinstance(text, str) and text:
                self.content.setdefault(index, []).append(text)
