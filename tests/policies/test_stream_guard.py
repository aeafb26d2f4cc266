"""StreamGuard: holding a window back, blocking before the first character of a finding, redacting."""

from __future__ import annotations

import re

import orjson
import pytest

from policies.checks.base import Context, Finding
from policies.stream import STEP, GuardRule, StreamGuard


class Word:
    """A check that finds a fixed word: enough to drive the guard's offsets."""

    def __init__(self, word: str) -> None:
        self.name = f"word_{word}"
        self.pattern = re.compile(re.escape(word))

    def __call__(self, text: str, context: Context) -> list[Finding]:
        return [Finding(self.name, m.start(), m.end(), {}) for m in self.pattern.finditer(text)]


def event(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def guard(action: str = "block", window: int = 10) -> tuple[StreamGuard, list[tuple[str, Finding]]]:
    decided: list[tuple[str, Finding]] = []
    rules = [GuardRule("no-poison", Word("POISON"), action)]
    return StreamGuard(rules, Context(), window, lambda rule, f: decided.append((rule, f))), decided


def text_of(events: list[bytes]) -> str:
    out = []
    for e in events:
        data = e.removeprefix(b"data: ").strip()
        if data != b"[DONE]":
            for choice in orjson.loads(data)["choices"]:
                out.append(choice["delta"].get("content") or "")
    return "".join(out)


def run(g: StreamGuard, pieces: list[str]) -> list[bytes]:
    sent = list(g.feed(event()))  # the role chunk carries no content
    for piece in pieces:
        sent += g.feed(event(piece))
    sent += g.feed(event(finish="stop"))
    sent += g.feed(DONE)
    return sent


def test_clean_text_passes_unchanged_and_complete() -> None:
    g, decided = guard()
    pieces = ["Take one ", "tablet daily ", "with food."]
    sent = run(g, pieces)
    assert text_of(sent) == "".join(pieces) and sent[-1] == DONE and not decided
    assert [e for e in sent if e != DONE] == [event(), *(event(p) for p in pieces), event(finish="stop")]


def test_events_are_held_until_a_window_of_text_follows_them_and_leave_in_steps() -> None:
    g, _ = guard(window=10)
    first = "x" * STEP
    assert g.feed(event(first)) == []  # nothing follows it yet
    assert g.feed(event("abcde")) == []  # 5 characters follow: still held
    released = g.feed(event("fghij"))  # now 10 follow the first event, and a step of text can leave
    assert text_of(released) == first
    assert g.feed(event("k")) == []  # one more character is not a step


@pytest.mark.parametrize(
    "pieces",
    [
        ["Take the POISON now."],  # inside one event
        ["Take the POI", "SON now."],  # across events
        ["Some safe words first, then a long sentence before it. Take the PO", "ISON", " now."],
    ],
)
def test_a_block_stops_before_the_first_character_of_the_finding(pieces: list[str]) -> None:
    g, decided = guard(window=12)
    sent = run(g, pieces)
    text = "".join(pieces)
    shown = text_of(sent)
    assert shown == text[: text.index("POISON")]
    assert "P" not in shown[len(text[: text.index("POISON")]) :]
    assert orjson.loads(sent[-2].removeprefix(b"data: "))["choices"][0]["finish_reason"] == "content_filter"
    assert sent[-1] == DONE and sent.count(DONE) == 1
    assert [rule for rule, _ in decided] == ["no-poison"]
    assert g.feed(event("more")) == []  # nothing after a block


def test_a_redaction_replaces_the_span_and_the_stream_goes_on() -> None:
    g, decided = guard(action="redact", window=12)
    sent = run(g, ["Take the POI", "SON now, then rest."])
    assert text_of(sent) == "Take the [redacted] now, then rest."
    assert sent[-1] == DONE and len(decided) == 1


def test_a_finding_in_the_newest_event_is_caught_before_it_leaves_even_with_a_small_window() -> None:
    g, decided = guard(window=3)
    sent = run(g, ["POISON", " and a long tail of safe text after it"])
    assert text_of(sent) == "" and len(decided) == 1


def test_the_end_of_an_upstream_without_done_releases_what_is_held() -> None:
    g, _ = guard(window=50)
    assert g.feed(event("short answer")) == []
    assert text_of(g.end()) == "short answer"


# ---------------------------------------------------------- the default pack: text leaves as soon as it is safe


def default_guard(hold: str = "finding") -> StreamGuard:
    from prometheus_client import CollectorRegistry

    from config import PoliciesConfig
    from policies.setup import build_engine
    from protocol.exchange import Exchange

    engine = build_engine(PoliciesConfig(audit_path=None, stream_hold=hold), CollectorRegistry())
    assert engine is not None
    ex = Exchange(request_id="r", operation="chat", tenant="t", model="m", upstream="u", stream=True,
                  payload={"model": "m", "messages": [{"role": "user", "content": "My knee hurts."}]})  # fmt: skip
    made = engine.stream_guard(ex)
    assert made is not None and made.incremental
    return made


def released_at(g: StreamGuard, text: str, size: int = 4) -> tuple[list[int], str]:
    """Per character, the token after which it left (tokens of ``size`` characters), and the text that left."""
    at: list[int] = []
    sent = []
    for index, piece in enumerate([*(text[i : i + size] for i in range(0, len(text), size)), None]):
        for out in g.feed(event(piece) if piece is not None else DONE):
            left = text_of([out])
            at += [index] * len(left)
            sent.append(left)
    return at, "".join(sent)


def test_text_no_check_could_read_a_finding_in_leaves_within_a_token_of_its_own() -> None:
    text = ("Rest the knee and keep it raised when you sit down. Cold packs wrapped in a towel help with the "
            "swelling, and gentle movement keeps it from stiffening while it heals.")  # fmt: skip
    at, sent = released_at(default_guard(), text)
    assert sent == text
    assert all(when - i // 4 <= 1 for i, when in enumerate(at))


def test_a_dose_is_held_from_its_number_until_its_sentence_ends_and_then_blocked() -> None:
    text = "Rest the knee. For the pain take 3000 mg of acetaminophen every 4 hours. Then see your doctor."
    _, sent = released_at(default_guard(), text)
    assert sent == "Rest the knee. For the pain take "


def test_a_name_after_a_label_never_leaves_a_character() -> None:
    text = "The note was written for Patient: Jane Roe, who should rest the knee. She can walk."
    _, sent = released_at(default_guard(), text)
    assert "Jane" not in sent and "Roe" not in sent and "[redacted]" in sent and sent.endswith("She can walk.")


def test_by_default_the_words_of_a_blocked_sentence_before_its_dose_leave_and_the_dose_does_not() -> None:
    text = "Rest the knee. For the knee pain, take ibuprofen 4000 mg every 4 hours. Then see your doctor."
    _, sent = released_at(default_guard(), text)
    assert sent == "Rest the knee. For the knee pain, take "


def test_with_stream_hold_sentence_no_byte_of_a_blocked_sentence_leaves() -> None:
    text = "Rest the knee. For the knee pain, take ibuprofen 4000 mg every 4 hours. Then see your doctor."
    _, sent = released_at(default_guard("sentence"), text)
    assert sent == "Rest the knee."


def test_with_stream_hold_sentence_each_sentence_leaves_whole_when_the_next_token_shows_it_ended() -> None:
    text = ("Rest the knee and keep it raised when you sit down. Cold packs help with the swelling. "
            "For the pain, ibuprofen 400 mg every 6 hours with food is usual. See a doctor if it lasts.")  # fmt: skip
    tokens = re.findall(r" ?\w+|[^\w\s]", text)  # as a model's tokenizer cuts it: a word with its space, a period
    g = default_guard("sentence")
    left: list[str] = []
    for index, token in enumerate(tokens):
        left.append(text_of(g.feed(event(token))))
        if index and tokens[index - 1] == ".":  # the token after a period: the sentence before it has ended
            assert "".join(left) == "".join(tokens[:index])
        else:
            assert left[-1] == ""  # nothing leaves mid-sentence
    assert "".join(left) + text_of(g.feed(DONE)) == text
