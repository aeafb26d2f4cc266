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
from protocol.readable import Key, Path, fields, set_field
from protocol.sse import DONE, error_event, event_data
from text.normal import normal

REDACTED = "[redacted]"
STEP = 64  # characters released at a time once the window is full
Decide = Callable[[str, Finding], None]  # (rule id, finding) -> record the decision


Channel = tuple[int, Key]  # a choice's index and one of its readable fields (protocol/readable.py)


@dataclass(slots=True)
class _Held:
    event: bytes
    chunk: dict[str, Any] | None  # the parsed chunk, when it has text to rewrite
    spans: dict[Channel, tuple[int, int]] = field(default_factory=dict)  # the offsets of its text in each channel
    paths: dict[Channel, tuple[int, Path]] = field(default_factory=dict)  # where: its choice's position, the path


@dataclass(frozen=True, slots=True)
class GuardRule:
    id: str
    check: Check
    action: str  # "block" or "redact"


class StreamGuard:
    def __init__(
        self, rules: list[GuardRule], context: Context, window: int, decide: Decide,
        unreadable: Callable[[str], bool] = lambda reason: False,
    ) -> None:  # fmt: skip
        self.rules = rules
        self.on_unreadable = unreadable  # records an event no check can read; True: let it through unchecked
        self.unreadable = False  # the stream was ended at an event no check could read
        self.blocked_by = ""  # the rule that ended the stream
        self.context = context
        self.window = window
        self.decide = decide
        self.texts: dict[Channel, str] = {}
        self.sent: dict[Channel, int] = {}  # characters of each channel already released
        self.redactions: dict[Channel, list[tuple[int, int]]] = {}
        self.choices: set[int] = set()  # the indices of the choices seen
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
        chunk = _chunk(data)
        if chunk is None and data is not None and not self.on_unreadable("event"):
            return self._refuse()  # data that is neither a JSON object nor [DONE]: no check can read it
        self._hold(event, chunk)
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

    def _hold(self, event: bytes, chunk: dict[str, Any] | None) -> None:
        held = _Held(event, None)
        if chunk is not None:
            for key in ("id", "created", "model", "object", "system_fingerprint"):
                if key in chunk:
                    self._meta[key] = chunk[key]
            choices = chunk.get("choices")
            for position, choice in enumerate(choices if isinstance(choices, list) else ()):
                index = choice.get("index", 0) if isinstance(choice, dict) else 0
                index = index if isinstance(index, int) else 0
                self.choices.add(index)
                for name, path, text in fields(choice):
                    if text:
                        channel: Channel = (index, name)
                        start = len(self.texts.get(channel, ""))
                        self.texts[channel] = self.texts.get(channel, "") + text
                        held.spans[channel] = (start, start + len(text))
                        held.paths[channel] = (position, path)
                        held.chunk = chunk
        self.held.append(held)

    def _check(self, indices: list[Channel]) -> tuple[Channel, int] | None:
        """Checks the held text of these channels; records findings; (channel, cut) when a block fires."""
        for index in indices:
            text = self.texts[index]
            sent = self.sent.get(index, 0)
            origin = max(0, sent - self.window)
            read = normal(text[origin:])
            for rule in self.rules:
                for finding in rule.check(read.text, self.context):
                    start, end = read.span(finding.start, finding.end)
                    start, end = start + origin, end + origin
                    if end <= sent or self._redacted(index, start, end):
                        continue  # already released (or already redacted): nothing left to stop
                    self.decide(rule.id, Finding(finding.check, start, end, finding.detail))
                    if rule.action == "block":
                        self.blocked_by = rule.id
                        return index, max(sent, start)
                    self.redactions.setdefault(index, []).append((max(sent, start), end))
        return None

    def _redacted(self, index: Channel, start: int, end: int) -> bool:
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

    def _refuse(self) -> list[bytes]:
        """An event no check can read: what is held is checked and released, then the stream ends with an error
        event (no [DONE]: the client must not take the answer for complete)."""
        cut = self._check(list(self.texts))
        if cut is not None:
            return self._block(*cut)
        out = self._release(final=True)
        self.blocked = self.unreadable = True
        message = "The upstream sent an event the gateway's policies could not read; the stream was ended there."
        return [*out, error_event(message, "upstream_unreadable")]

    def _block(self, index: Channel, cut: int) -> list[bytes]:
        """Everything before ``cut`` in channel ``index``, then a content_filter finish for every choice and
        [DONE]."""
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
        finished = [{"index": i, "delta": {}, "finish_reason": "content_filter"} for i in sorted(self.choices)]
        closing = {**self._meta, "choices": finished, "medic_policy": {"action": "block", "rule": self.blocked_by,
                                                                          "stage": "stream"}}  # fmt: skip
        closing.setdefault("object", "chat.completion.chunk")
        closing.setdefault("created", int(time.time()))
        out += [b"data: " + orjson.dumps(closing) + b"\n\n", b"data: [DONE]\n\n"]
        return out

    def _render(self, held: _Held, cut: tuple[Channel, int] | None) -> bytes:
        """The held event as it may leave: unchanged, or rewritten with redactions and a cut applied."""
        touched = cut is not None or any(self._overlaps(i, s) for i, s in held.spans.items())
        if not touched or held.chunk is None:
            return held.event
        chunk = orjson.loads(orjson.dumps(held.chunk))  # a copy: the held chunk may be rendered once only anyway
        for channel, (start, end) in held.spans.items():
            if cut is not None and cut[0] == channel:
                end = min(end, cut[1])
            position, path = held.paths[channel]
            set_field(chunk["choices"][position], path, self._visible(channel, start, end))
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _overlaps(self, index: Channel, span: tuple[int, int]) -> bool:
        return any(a < span[1] and span[0] < b for a, b in self.redactions.get(index, ()))

    def _visible(self, index: Channel, start: int, end: int) -> str:
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
