#!/usr/bin/env python3
"""How much of a stream the policy guard holds back, with the default pack, side by side with the direct path.

A stream is paced like a real model: a token of --token-chars characters every --token-ms milliseconds. Each
text is cut into such tokens and fed, as OpenAI chunks, to the gateway's own StreamGuard (the default pack's
enforced stream rules: dose-above-max, phi-leak); for every character we note the token after which the guard
let it out. Direct, a character leaves with its own token; the hold-back is the difference, in tokens and in
milliseconds at that pace. Two guards run on the same tokens: ``incremental`` (text leaves as soon as no check
could still begin a finding in it; the gateway's default) and ``window`` (the earlier guard: 200 characters
held behind the newest text), so the table compares them in one run; ``sentence`` is the incremental guard with
``policies.stream_hold: sentence`` (every sentence held until it ends, so no byte of a blocked sentence leaves);
then the incremental guard with each rule alone, for the hold-back per check.

Texts: an opening with no drug, number or identifier (the issue's target: its first character and its 120th no
more than one token later than direct), MEDEC-MS corrected notes, PubMedQA-L conclusions (public data, never
tuned on here).

    .venv/bin/python bench/stream_holdback.py [--token-chars 4] [--token-ms 30] [--notes 100]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections.abc import Callable

import orjson
from prometheus_client import CollectorRegistry

import corpora
from config import PoliciesConfig
from policies.engine import PolicyEngine
from policies.setup import build_engine
from policies.stream import StreamGuard
from protocol.exchange import Exchange

PLAIN = ("Rest the knee and keep it raised when you sit down. Cold packs wrapped in a towel help with the swelling, "
         "and gentle movement keeps it from stiffening while it heals.")  # fmt: skip


def chunks(text: str, size: int) -> list[bytes]:
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    base = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{**base, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"]


def release_tokens(guard: StreamGuard, events: list[bytes]) -> list[int]:
    """For each character of the text, the index of the token after which it left the guard."""
    released: list[int] = []
    for index, event in enumerate(events):
        for out in guard.feed(event):
            data = out.removeprefix(b"data: ").strip()
            if data == b"[DONE]":
                continue
            for choice in orjson.loads(data).get("choices", ()):
                released += [index] * len((choice.get("delta") or {}).get("content") or "")
    return released


def measure(make: Callable[[], StreamGuard], text: str, size: int) -> list[int]:
    """Per character, how many tokens after its own it left (0: as direct)."""
    events = chunks(text, size)
    released = release_tokens(make(), events)
    own = [1 + i // size for i in range(len(text))]  # event 0 is the role chunk
    return [r - o for r, o in zip(released, own, strict=False)]


def guard_maker(
    engine: PolicyEngine, incremental: bool, only: str | None = None, sentences: bool = False
) -> Callable[[], StreamGuard]:
    def make() -> StreamGuard:
        ex = Exchange(request_id="r", operation="chat", tenant="t", model="m", upstream="u", stream=True,
                      payload={"model": "m", "messages": [{"role": "user", "content": "A question."}]})  # fmt: skip
        guard = engine.stream_guard(ex)
        assert guard is not None
        guard.incremental = guard.incremental and incremental
        guard.whole_sentences = sentences
        if only is not None:
            guard.rules = [rule for rule in guard.rules if rule.id == only]
        return guard

    return make


def texts(notes: int) -> dict[str, list[str]]:
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(newline="", encoding="utf-8") as f:
        medec = [r["Text"] if r["Error Flag"] == "0" else r["Corrected Text"] for r in csv.DictReader(f)][:notes]
    pubmed = json.loads(corpora.path(corpora.PUBMEDQA_L).read_text(encoding="utf-8"))
    conclusions = [item["LONG_ANSWER"] for item in list(pubmed.values())[:notes]]
    return {"plain opening": [PLAIN], "MEDEC-MS notes": medec, "PubMedQA-L conclusions": conclusions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-chars", type=int, default=4)
    parser.add_argument("--token-ms", type=float, default=30.0)
    parser.add_argument("--notes", type=int, default=100)
    args = parser.parse_args()
    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    ms = args.token_ms
    print(f"tokens of {args.token_chars} characters every {ms:g} ms; hold-back = tokens later than direct\n")
    print("| texts | guard | 1st char | 120th char | mean per char | p95 per char | chars held > 1 token |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, group in texts(args.notes).items():
        for mode in ("incremental", "window", "sentence", "dose-above-max only", "phi-leak only"):
            only = mode.removesuffix(" only") if mode.endswith(" only") else None
            make = guard_maker(engine, mode != "window", only, mode == "sentence")
            lags = [measure(make, text, args.token_chars) for text in group]
            every = [lag for text_lags in lags for lag in text_lags]
            first = statistics.mean(lag[0] for lag in lags)
            at120 = statistics.mean(lag[119] for lag in lags if len(lag) >= 120)
            p95 = sorted(every)[int(0.95 * (len(every) - 1))]
            held = sum(lag > 1 for lag in every) / len(every)
            print(f"| {name} ({len(group)}) | {mode} | {first:.1f} ({first * ms:.0f} ms) | {at120:.1f} "
                  f"({at120 * ms:.0f} ms) | {statistics.mean(every):.1f} | {p95} | {100 * held:.1f} % |")  # fmt: skip


if __name__ == "__main__":
    main()
