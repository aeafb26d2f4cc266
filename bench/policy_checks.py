#!/usr/bin/env python3
"""CPU cost of the policy checks and of the policy stages, per call, on a 300-word clinical answer.

The answer and its request are the ones `bench/run.py --medec-body --medec-answer-words 300` sends and has the
fake upstream answer: a handover-summary request of consecutive MEDEC-MS corrected notes (at least 600 words), and
an extractive summary of them of about 300 words (Ben Abacha et al., "MEDEC", Findings of ACL 2025; CC BY 4.0).
It holds no drug dose, no identifier the caller did not supply and no red flag: every check runs to the end and
finds nothing, which the script verifies before timing.

Timed, each as the best of --repeat rounds of timeit (the number of calls per round chosen so that a round takes
at least 0.2 s), in microseconds per call:

  * every check of policies/checks/registry.py (`all_checks()`) on the answer, each call with a new `Context` (as
    the first rule of an exchange pays for what checks derive from the request); `prompt_injection`, a
    request-stage check, also on the request's text, which is what the pack runs it on;
  * before the answer goes out, what the client waits for: `PolicyEngine.on_request` on the request (enforced
    request blocks; the default pack has none) and `PolicyEngine.on_response` on the fake upstream's parsed JSON
    body (the enforced block and redact rules: `dose-above-max`, `phi-leak`);
  * while the upstream works on the answer: `PolicyEngine.while_waiting`, the request's flag, allow and shadow
    rules (`prompt-injection`) and what the answer's rules derive from the request (its red flags);
  * after the answer has gone out: `PolicyEngine.after_answer` on an exchange `while_waiting` prepared, the flag,
    allow and shadow rules on the whole answer (`dangerous-instruction`, `red-flag-unescalated`, `refusal`);
  * the stream stage: a `StreamGuard` fed every SSE event of the streamed answer (chunks of --chunk-words words)
    and `[DONE]` (the enforced block and redact rules, on every chunk with the held-back window), then
    `after_answer` on the whole text.

A second column times the same calls with the caller's words left out of the context (no messages in the request),
to show which part of a check's cost is reading the request rather than the answer.

The engine is the gateway's (`policies.setup.build_engine`) with the default pack, no audit file, a private metrics
registry. It measures the packages the interpreter imports: the checkout the project's .venv was installed from
(editable); for another copy of the code, put it first with ``PYTHONPATH=<that copy>``:

    .venv/bin/python bench/policy_checks.py [--repeat 7] [--words 300] [--chunk-words 4]

`--words 0` times the small built-in exchange of `bench/run.py` instead ("Say hello in one short sentence." and the
fake upstream's built-in answer, streamed in its own five chunks).
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

import fake_upstream  # bench/, beside this script
import orjson
from prometheus_client import CollectorRegistry
from run import MEDEC_CSV, MEDEC_QUESTION, MODEL, chat_body, medec_request

from config import PoliciesConfig
from policies.checks.base import Context
from policies.checks.registry import all_checks
from policies.engine import PolicyEngine, context_of
from policies.setup import build_engine
from protocol.exchange import Exchange

TARGET_US = 200.0  # the target: the pack adds at most 0.2 ms to a 300-word non-streamed answer


def best_us(call: Callable[[], object], repeat: int) -> float:
    """Microseconds per call: the best of `repeat` timeit rounds of at least 0.2 s each."""
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def exchange(payload: dict[str, object]) -> Exchange:
    return Exchange(request_id="bench", operation="chat", tenant="bench", model=MODEL, upstream="default",
                    payload=payload)  # fmt: skip


def guard_once(engine: PolicyEngine, payload: dict[str, object], events: list[bytes]) -> list[bytes]:
    """One streamed answer through the stream guard (enforced block and redact rules, on every chunk with the
    held-back window), as gateway/proxy.py feeds it: the events it lets out."""
    guard = engine.stream_guard(exchange(payload))
    if guard is None:
        return events
    return [out for event in events for out in guard.feed(event)] + guard.end()


def waited(engine: PolicyEngine, payload: dict[str, object], streamed: bool) -> Exchange:
    """An exchange as the upstream has it: ``while_waiting`` has run its request rules and prepared the rest."""
    ex = exchange(payload)
    ex.stream = streamed
    engine.while_waiting(ex)
    return ex


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7, help="timeit rounds; the best counts (default 7)")
    p.add_argument("--words", type=int, default=300, help="words of the answer (default 300; 0: the built-in exchange)")
    p.add_argument("--chunk-words", type=int, default=4, help="words per streamed chunk (default 4)")
    p.add_argument("--question", action="store_true", help="a short question as the request instead of the note")
    p.add_argument("--medec-data", default=str(MEDEC_CSV), help="MEDEC-MS CSV (default: the packaged copy)")
    args = p.parse_args()

    if args.words:
        body, note, answer = medec_request(Path(args.medec_data), args.words, args.question)
        note = MEDEC_QUESTION if args.question else note
        fake_upstream.use_answer(answer, args.chunk_words)
    else:
        body, note = json.loads(chat_body(False)), ""
        answer = json.loads(fake_upstream.COMPLETION)["choices"][0]["message"]["content"]
    payload: dict[str, object] = dict(body)
    bare: dict[str, object] = {**payload, "messages": []}  # the same exchange without the caller's words
    context, empty = context_of(payload), context_of(bare)
    checks = all_checks()
    found = {name: check(answer, context) for name, check in checks.items()}
    found["prompt_injection (request)"] = checks["prompt_injection"](context.request_text, context)
    if any(found.values()):
        dirty = {name: len(findings) for name, findings in found.items() if findings}
        sys.exit(f"the answer is not clean: {dirty}")

    engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())
    assert engine is not None
    completion = fake_upstream.COMPLETION
    events = [*fake_upstream.SSE_EVENTS, fake_upstream.SSE_DONE]
    if engine.on_response(exchange(payload), completion, orjson.loads(completion)) != (completion, None):
        sys.exit("on_response changed the answer or flagged it")
    if guard_once(engine, payload, events) != events:
        sys.exit("the stream guard changed the stream")

    def timed(call: Callable[[dict[str, object]], object]) -> tuple[float, float]:
        """(µs with the request, µs with the caller's words left out)."""
        return best_us(lambda: call(payload), args.repeat), best_us(lambda: call(bare), args.repeat)

    def check_on(name: str, text: str) -> Callable[[dict[str, object]], object]:
        """A check called as the first rule of an exchange: with a new Context, so that what checks derive from
        the request once per exchange (Context.once, where the code has it) is paid on every call."""
        return lambda pl: checks[name](text, Context((context if pl is payload else empty).request_text))

    request_text = context.request_text
    rows: list[tuple[str, str, tuple[float, float] | float]] = []
    for name in checks:
        rows.append((f"`{name}`", f"answer ({len(answer):,} chars)", timed(check_on(name, answer))))
    injection_us = best_us(lambda: checks["prompt_injection"](request_text, Context(request_text)), args.repeat)
    rows.append(("`prompt_injection`", f"request ({len(request_text):,} chars)", injection_us))
    request_us = best_us(lambda: engine.on_request(exchange(payload)), args.repeat)
    rows.append(("request stage: `on_request`", "request", request_us))
    response = timed(lambda pl: engine.on_response(exchange(pl), completion, orjson.loads(completion)))
    rows.append(("response stage: `on_response`", f"JSON body ({len(completion):,} bytes)", response))
    waiting = timed(lambda pl: waited(engine, pl, False))
    rows.append(("while the upstream works: `while_waiting`", "request", waiting))
    prepared = {False: waited(engine, payload, False), True: waited(engine, payload, True)}
    prepared_bare = {False: waited(engine, bare, False), True: waited(engine, bare, True)}

    def after_answer(streamed: bool) -> Callable[[dict[str, object]], object]:
        """The answer's flag, allow and shadow rules on an exchange ``while_waiting`` prepared (the clean answer
        adds no decision to it, so the same exchange serves every call)."""
        return lambda pl: engine.after_answer((prepared if pl is payload else prepared_bare)[streamed], streamed,
                                              [answer])  # fmt: skip

    after = timed(after_answer(False))
    rows.append(("after the answer: `after_answer`", "answer", after))
    guard = timed(lambda pl: guard_once(engine, pl, events))
    rows.append(("stream stage, guard: `StreamGuard.feed` per event", f"{len(events)} SSE events", guard))
    after_stream = timed(after_answer(True))
    rows.append(("stream, after the end: `after_answer`", "answer", after_stream))

    kind = "question" if args.question else "note"
    request = f"a {len(note.split())}-word {kind}" if note else "the built-in one"
    print(
        f"Policy checks and stages, default pack, on a {len(answer.split())}-word answer ({len(answer):,} "
        f"characters, {len(events)} SSE events); request: {request} ({len(request_text):,} characters of the "
        f"caller's words). Best of {args.repeat} timeit rounds, Python {sys.version.split()[0]}.\n"
    )
    print("| what | on | µs per call | µs, caller's words left out |")
    print("|---|---|---:|---:|")
    for name, on, us in rows:
        both = us if isinstance(us, tuple) else (us, None)
        print(f"| {name} | {on} | {both[0]:,.1f} | {'' if both[1] is None else f'{both[1]:,.1f}'} |")
    before = request_us + response[0]
    verdict = "within" if before <= TARGET_US else "above"
    print(
        f"\nBefore the answer goes out (request and response stages, what the client waits for): {before:,.1f} µs, "
        f"{verdict} the {TARGET_US:.0f} µs target ({request_us + response[1]:,.1f} µs without the caller's words). "
        f"While the upstream works (request rules, what the answer's derive from the request): {waiting[0]:,.1f} µs. "
        f"After the answer has gone out (the answer's flag, allow and shadow rules): {after[0]:,.1f} µs."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
