"""Blocking and redacting inside a stream: hold back a window, check it, release what is safe.

``StreamGuard.feed`` takes each event as the relay would send it and returns the events to send now. An
event is held until at least ``window`` characters of its choice's text follow it, so that a rule has seen
the text around it before any of it leaves; text leaves in steps of STEP characters, and before each step
the new text is checked together with the held text before it. When a blocking rule fires, the events
before the finding leave, the event that holds its first character leaves cut just before it, and a last
chunk with ``finish_reason: "content_filter"`` and ``[DONE]`` end the stream: no character of the blocked
span is ever sent. A redacting rule replaces its span with ``[redacted]`` in the held events. Without such
a rule in force the relay does not use a guard at all, and chunks are not held back.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from policies.checks.base import Check, Context, Finding
from protocol.sse import DONE, event_data

REDACTED = "[redacted]"
STEP = 64  # characters released at a time once the window is full
Decide = Callable[[str, Finding], None]  # (rule id, finding) -> record the decision


@dataclass(slots=True)
class _Held:
    event: bytes
    chunk: dict[str, Any] | None  # the parsed chunk, when it has content to rewrite
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)  # choice index -> its content's offsets


@dataclass(frozen=True, slots=True)
class GuardRule:
    id: str
    check: Check
    action: str  # "block" or "redact"


class StreamGuard:
    def __init__(self, rules: list[GuardRule], context: Context, window: int, decide: Decide) -> None:
        self.rules = rules
        self.context = context
        self.window = window
        self.decide = decide
        self.texts: dict[int, str] = {}
        self.sent: dict[int, int] = {}  # characters of each choice already released
        self.redactions: dict[int, list[tuple[int, int]]] = {}
        self.held: deque[_Held] = deque()
        self.blocked = False
        self._meta: dict[str, Any] = {}

    def feed(self, event: bytes) -> list[bytes]:
        """The events to send now (an empty list while holding; the closing events after a block)."""
        if self.blocked:
            return []
        data = event_data(event)
        if data is not None and data.strip() == DONE:
            out = self._finish()
            return out if self.blocked else [*out, event]
        self._hold(event, data)
        if not self._due():
            return []  # nothing could leave yet: no need to check
        cut = self._check(list(self.texts))
        if cut is not None:
            return self._block(*cut)
        return self._release(final=False)

    def _due(self) -> bool:
        """Whether at least STEP characters of some choice could leave: text leaves (and is checked) in steps,
        not per event, so the checks run a few times per stream rather than on every token."""
        return any(len(text) - self.window - self.sent.get(i, 0) >= STEP for i, text in self.texts.items())

    def end(self) -> list[bytes]:
        """The upstream ended without [DONE]: release or block what is held (no [DONE] is invented)."""
        return [] if self.blocked else self._finish()

    def _hold(self, event: bytes, data: bytes | None) -> _Held:
        chunk = _chunk(data)
        held = _Held(event, None)
        if chunk is not None:
            for key in ("id", "created", "model", "object", "system_fingerprint"):
                if key in chunk:
                    self._meta[key] = chunk[key]
            for choice in chunk.get("choices") or ():
                text = _delta_text(choice)
                if text:
                    index = choice.get("index", 0)
                    start = len(self.texts.get(index, ""))
                    self.texts[index] = self.texts.get(index, "") + text
                    held.spans[index] = (start, start + len(text))
                    held.chunk = chunk
        self.held.append(held)
        return held

    def _check(self, indices: list[int]) -> tuple[int, int] | None:
        """Checks the held text of these choices; records findings; (choice, cut) when a block fires."""
        for index in indices:
            text = self.texts[index]
            sent = self.sent.get(index, 0)
            origin = max(0, sent - self.window)
            for rule in self.rules:
                for finding in rule.check(text[origin:], self.context):
                    start, end = finding.start + origin, finding.end + origin
                    if end <= sent or self._redacted(index, start, end):
                        continue  # already released (or already redacted): nothing left to stop
                    self.decide(rule.id, Finding(finding.check, start, end, finding.detail))
                    if rule.action == "block":
                        return index, max(sent, start)
                    self.redactions.setdefault(index, []).append((max(sent, start), end))
        return None

    def _redacted(self, index: int, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self.redactions.get(index, ()))

    def _release(self, final: bool) -> list[bytes]:
        out = []
        while self.held:
            head = self.held[0]
            if not final and any(end > len(self.texts[i]) - self.window for i, (_, end) in head.spans.items()):
                break
            self.held.popleft()
            out.append(self._render(head, None))
            for index, (_, end) in head.spans.items():
                self.sent[index] = end
        return out

    def _finish(self) -> list[bytes]:
        cut = self._check(list(self.texts))
        if cut is not None:
            return self._block(*cut)
        return self._release(final=True)

    def _block(self, index: int, cut: int) -> list[bytes]:
        """Everything before ``cut`` in choice ``index``, then the content_filter chunk and [DONE]."""
        self.blocked = True
        out = []
        while self.held:
            head = self.held.popleft()
            span = head.spans.get(index)
            if span is not None and span[1] > cut:
                if span[0] < cut:
                    out.append(self._render(head, (index, cut)))
                break
            out.append(self._render(head, None))
        self.held.clear()
        closing = {**self._meta, "choices": [{"index": index, "delta": {}, "finish_reason": "content_filter"}]}
        closing.setdefault("object", "chat.completion.chunk")
        closing.setdefault("created", int(time.time()))
        out += [b"data: " + orjson.dumps(closing) + b"\n\n", b"data: [DONE]\n\n"]
        return out

    def _render(self, held: _Held, cut: tuple[int, int] | None) -> bytes:
        """The held event as it may leave: unchanged, or rewritten with redactions and a cut applied."""
        touched = cut is not None or any(self._overlaps(i, s) for i, s in held.spans.items())
        if not touched or held.chunk is None:
            return held.event
        chunk = orjson.loads(orjson.dumps(held.chunk))  # a copy: the held chunk may be rendered once only anyway
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            if index not in held.spans:
                continue
            start, end = held.spans[index]
            if cut is not None and cut[0] == index:
                end = min(end, cut[1])
            _set_delta_text(choice, self._visible(index, start, end))
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _overlaps(self, index: int, span: tuple[int, int]) -> bool:
        return any(a < span[1] and span[0] < b for a, b in self.redactions.get(index, ()))

    def _visible(self, index: int, start: int, end: int) -> str:
        """The text of [start, end) with redacted ranges replaced: the marker where a range begins."""
        text = self.texts[index]
        out, position = [], start
        for a, b in sorted(self.redactions.get(index, ())):
            if b <= position or a >= end:
                continue
            out.append(text[position : max(position, a)])
            if a >= start:
                out.append(REDACTED)
            position = min(end, b)
        out.append(text[position:end])
        return "".join(out)


def _chunk(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def _delta_text(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return text if isinstance(text, str) else None


def _set_delta_text(choice: dict[str, Any], text: str) -> None:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        delta["content"] = text
    else:
        choice["text"] = text
