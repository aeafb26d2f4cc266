"""Blocking and redacting inside a stream: release what no check could still turn into a finding, hold the rest.

``StreamGuard.feed`` takes each event as the relay would send it and returns the events to send now. Every check
of the default pack says where its findings can begin (``starts``: a number, a drug of the table, a capitalised
word that could be a name, an address) and whether a word still arriving could become such a place
(``may_grow``). Text leaves as soon as it arrives, up to the first such place whose sentence has not ended (or
the word still arriving, when it could grow into one); once the sentence is complete the checks read it, with
the text before it, and only then does it leave. A text with no number, drug or identifier in its opening is
not held at all beyond its last word. A rule whose check says neither falls back to a window: an event is held
until ``window`` characters of its choice's text follow it, and text leaves in steps of STEP characters.

When a blocking rule fires, the events before the finding leave, the event that holds its first character
leaves cut just before it, and a last chunk giving every choice ``finish_reason: "content_filter"`` (with the
verdict in ``medic_policy``) and ``[DONE]`` end the stream: no character of the blocked span is ever sent. When
the client asked for usage (``stream_options.include_usage``), the upstream is read to its end (its text
discarded) so that the usage chunk still comes before ``[DONE]``. A
redacting rule replaces its span with ``[redacted]`` in the held events. Without such a rule in force the relay
does not use a guard at all, and chunks are not held back.
"""

from __future__ import annotations

import re
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
DRAIN_S = 30.0  # a blocked stream waits this long at most for the usage chunk its client asked for
MAX_HOLD = 2000  # characters held behind a place a finding could begin, at most, when its sentence never ends
# A sentence ends at ".", "!" or "?" before a space (not "e.g.", "i.e.", "vs.", "approx.", "max.", "no."), or a line.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bapprox)(?<!\bmax)(?<!\bno)[.!?](?=\s)|\n")
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
        unreadable: Callable[[str], bool] = lambda reason: False, wants_usage: bool = False,
        whole_sentences: bool = False,
    ) -> None:  # fmt: skip
        self.rules = rules
        self.whole_sentences = whole_sentences  # hold every sentence until it ends; a block cuts at its start
        self.on_unreadable = unreadable  # records an event no check can read; True: let it through unchecked
        self.unreadable = False  # the stream was ended at an event no check could read
        self.blocked_by = ""  # the rule that ended the stream
        self.wants_usage = wants_usage  # the client asked for the usage chunk: a blocked stream still ends with it
        self.draining = False  # blocked, and waiting for that usage chunk
        self.drain_deadline = 0.0  # when the relay stops waiting for it (time.monotonic)
        # Every check says where its findings can begin: text is released as soon as none can begin in it
        # (``_advance``); otherwise a window of ``window`` characters is held behind the newest text.
        self.incremental = all(hasattr(r.check, "starts") and hasattr(r.check, "may_grow") for r in rules)
        self.release_at: dict[Channel, int] = {}
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
            return self._drain(event, event_data(event)) if self.draining else []
        data = event_data(event)
        if data is not None and data.strip() == DONE:
            out = self._finish()
            return out if self.blocked else [*out, event]
        chunk = _chunk(data)
        if chunk is None and data is not None and not self.on_unreadable("event"):
            return self._refuse()  # data that is neither a JSON object nor [DONE]: no check can read it
        self._hold(event, chunk)
        if self.incremental:
            return self._advance()
        if not self._due():
            return []  # nothing could leave yet: no need to check
        cut = self._check(list(self.texts))
        if cut is not None:
            return self._block(*cut)
        return self._release(final=False)

    def _advance(self) -> list[bytes]:
        """Releases all text no check could still turn into a finding: up to the word still arriving, or to the
        first place a finding could begin (``Check.starts``) whose sentence has not ended. The checks run only
        when text holding such a place is about to leave (its sentence complete), not for every token."""
        due = False
        for channel, text in self.texts.items():
            sent = self.sent.get(channel, 0)
            at, triggered = self._releasable(text, sent)
            if at > self.release_at.get(channel, sent):
                self.release_at[channel] = at
                due = due or triggered
        if due:
            cut = self._check(list(self.texts))
            if cut is not None:
                return self._block(*cut)
        return self._release(final=False)

    def _releasable(self, text: str, sent: int) -> tuple[int, bool]:
        """How far ``text`` may leave now, and whether that stretch holds a place a finding could begin (so the
        checks must read it first)."""
        limit = len(text)
        if text and not text[-1].isspace():
            word_start = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t")) + 1  # the word still arriving
            if any(rule.check.may_grow(text[word_start:]) for rule in self.rules):  # type: ignore[attr-defined]
                limit = word_start
        if self.whole_sentences:
            limit = min(limit, _sentence_start(text, limit, sent))
        origin = max(0, sent - self.window)
        read = normal(text[origin:])
        starts = sorted({read.span(t, t + 1)[0] + origin for rule in self.rules
                         for t in rule.check.starts(read.text)})  # type: ignore[attr-defined]  # fmt: skip
        triggered = False
        for start in starts:
            if start < sent:
                continue
            if start >= limit or _SENTENCE_END.search(text, start) is None:
                limit = min(limit, start)  # a finding may still begin here: held until its sentence ends
                break
            triggered = True
        if len(text) - limit > MAX_HOLD:  # a sentence that never ends: held no further than the window
            limit = max(limit, len(text) - self.window)
            triggered = True
        return max(limit, sent), triggered

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
                        if self.whole_sentences:
                            start = _sentence_start(text, start, sent)
                        return index, max(sent, start)
                    self.redactions.setdefault(index, []).append((max(sent, start), end))
        return None

    def _redacted(self, index: Channel, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self.redactions.get(index, ()))

    def _release(self, final: bool) -> list[bytes]:
        out = []
        while self.held:
            head = self.held[0]
            if not final and any(end > self._released_to(i) for i, (_, end) in head.spans.items()):
                break
            self.held.popleft()
            out.append(self._render(head, None))
            for index, (_, end) in head.spans.items():
                self.sent[index] = end
        return out

    def _released_to(self, channel: Channel) -> int:
        """The offset of the channel's text that may leave."""
        if self.incremental:
            return self.release_at.get(channel, 0)
        return len(self.texts[channel]) - self.window

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
        out.append(b"data: " + orjson.dumps(closing) + b"\n\n")
        if self.wants_usage:
            self.draining = True  # the usage chunk the client asked for is still to come: [DONE] after it
            self.drain_deadline = time.monotonic() + DRAIN_S
        else:
            out.append(b"data: [DONE]\n\n")
        return out

    @property
    def waiting_for_usage(self) -> bool:
        """Blocked, and still reading the upstream for the usage chunk (at most DRAIN_S after the block)."""
        return self.draining and time.monotonic() < self.drain_deadline

    def _drain(self, event: bytes, data: bytes | None) -> list[bytes]:
        """After a block, while the upstream finishes: nothing of its text; its usage chunk, then [DONE]."""
        if data is not None and data.strip() == DONE:
            self.draining = False
            return [event]
        chunk = _chunk(data)
        if chunk is not None and chunk.get("usage") and not chunk.get("choices"):
            return [event]
        return []

    def stop_draining(self) -> list[bytes]:
        """The upstream ended, failed, or took too long after a block: the stream ends here."""
        if not self.draining:
            return []
        self.draining = False
        return [b"data: [DONE]\n\n"]

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


def _sentence_start(text: str, at: int, origin: int) -> int:
    """Where the sentence holding offset ``at`` begins: just after the last sentence end before it, at or after
    ``origin`` (``origin`` when none is)."""
    start = origin
    for match in _SENTENCE_END.finditer(text, origin, at):
        start = match.end()
    return start


def _chunk(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None
