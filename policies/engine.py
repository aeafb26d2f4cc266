"""The policy engine: which rules apply to an exchange, what they decide, and the record of every decision.

Inline stages (docs/policies.md):

* ``request``: before the request goes upstream, on the user's turns and supplied documents. A block is an
  OpenAI-shaped error (code ``content_policy_violation``, the rule id, nothing of the offending text).
* ``response``: on a complete (non-streamed) answer. A block is the same error instead of the answer; a
  redaction replaces the span with ``[redacted]`` in the JSON body.
* ``stream``: enforced block and redact rules run in a ``StreamGuard`` over a held-back window.

Only what can change what is sent runs before it is sent: enforced block and redact rules. ``flag`` (let
through, mark the exchange: it is sampled for the judges with trigger "policy"), ``allow`` (record only) and
``shadow: true`` (record what the rule would have done) change no byte: ``while_waiting`` runs the request's
while the upstream works on the answer, and prepares what the answer's derive from the request (a red flag in
the request, ``Check.prepare``); ``after_answer`` runs the answer's once it has gone out, on the whole answer.
They never add to the time to an answer, and nothing of a stream is held back for them. Every decision goes to
the audit log and to ``medic_policy_decisions_total``. Results rules (stage ``results``) are run by
``policies.monitor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from policies.audit import AuditLog, PolicyMetrics
from policies.checks.base import Check, Context, Finding
from policies.pack import Pack, Rule
from policies.stream import REDACTED, GuardRule, StreamGuard
from protocol.errors import GatewayError, UpstreamUnreadable
from protocol.exchange import Exchange
from protocol.readable import fields, set_field
from text.normal import Normal, normal, normal_text

DEFAULT_WINDOW_CHARS = 200


class PolicyBlocked(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"

    def __init__(self, rule: str, stage: str) -> None:
        what = "request" if stage == "request" else "response"
        super().__init__(f"The {what} was blocked by the gateway's policy rule '{rule}'.", param=None)
        self.rule = rule
        self.stage = stage


def withheld(parsed: dict[str, Any], blocked: PolicyBlocked) -> bytes:
    """A blocked complete answer as Azure OpenAI's content filter delivers one, and as a blocked stream ends:
    every choice withheld (no content) with ``finish_reason: "content_filter"``, the usage the tokens cost, and
    the verdict in ``medic_policy`` (the rule, the action, the stage; never the text)."""
    choices = parsed.get("choices")
    count = len(choices) if isinstance(choices, list) else 1
    chat = parsed.get("object") != "text_completion"
    kept = ("id", "object", "created", "model", "system_fingerprint", "usage")
    out: dict[str, Any] = {key: parsed[key] for key in kept if key in parsed}
    out["choices"] = [{"index": i, "finish_reason": "content_filter", "logprobs": None,
                       **({"message": {"role": "assistant", "content": None}} if chat else {"text": ""})}
                      for i in range(count)]  # fmt: skip
    out["medic_policy"] = verdict(blocked.rule, blocked.stage)
    return orjson.dumps(out)


def verdict(rule: str, stage: str) -> dict[str, str]:
    """What apps read of a block: which rule, which action, at which stage."""
    return {"action": "block", "rule": rule, "stage": stage}


@dataclass(frozen=True, slots=True)
class Bound:
    """A rule of a pack, with the check it runs."""

    pack: str
    rule: Rule
    check: Check | None


@dataclass(frozen=True, slots=True)
class Plan:
    """The rules of one stage for one model, upstream and tenant, sorted once by when they run."""

    acting: list[Bound]  # enforced block and redact rules: they can change what is sent, so run before it is
    watching: list[Bound]  # flag, allow and shadow rules with a check: run off the answer's way (while, after)
    by_id: dict[str, Bound]

    @classmethod
    def of(cls, bound: list[Bound]) -> Plan:
        acting = [b for b in bound if b.check is not None and _acts(b)]
        watching = [b for b in bound if b.check is not None and not _acts(b)]
        return cls(acting, watching, {b.rule.id: b for b in bound})


class PolicyEngine:
    def __init__(self, packs: list[Pack], checks: dict[str, Check], audit: AuditLog, metrics: PolicyMetrics,
                 window_chars: int = DEFAULT_WINDOW_CHARS, blocked_answer: str = "filtered",
                 stream_hold: str = "finding") -> None:  # fmt: skip
        self.packs = packs
        self.checks = checks
        self.audit = audit
        self.metrics = metrics
        self.window = window_chars
        self.blocked_answer = blocked_answer
        self.stream_hold = stream_hold
        self._cache: dict[tuple[str, str | None, str, str], Plan] = {}
        self.states: dict[str, dict[str, str]] = {}  # model -> {results rule id: action} while it holds

    # ------------------------------------------------------------------------------------ model states

    def model_actions(self, model: str) -> set[str]:
        """The actions results rules currently hold on ``model`` (degrade, fallback, review)."""
        return {action for action in self.states.get(model, {}).values() if action != "shadow"}

    def set_state(self, model: str, pack: str, rule: Rule, tripped: bool, value: float, count: int) -> None:
        """Enter or leave a results rule's state; each change is audited and counted. A shadowed rule's state
        is recorded ("shadow") but acts on nothing."""
        held = self.states.setdefault(model, {})
        if tripped == (rule.id in held):
            return
        if tripped:
            held[rule.id] = "shadow" if rule.shadow else rule.action
        else:
            held.pop(rule.id)
        direction = "entered" if tripped else "left"
        self.audit.record({
            "model": model, "pack": pack, "rule": rule.id, "stage": "results", "action": rule.action,
            "mode": "shadow" if rule.shadow else "enforced", "transition": direction,
            "statistic": round(value, 4), "scores": count,
        })  # fmt: skip
        self.metrics.transitions.labels(model, rule.id, rule.action, direction).inc()
        if not rule.shadow:
            active = rule.action in self.model_actions(model)
            self.metrics.model_state.labels(model, rule.action).set(1 if active else 0)

    def rules(self, ex: Exchange, stage: str, upstream: str | None) -> Plan:
        """The rules of this stage that apply to the exchange's model, upstream and tenant (cached)."""
        key = (ex.model, upstream, ex.tenant, stage)
        found = self._cache.get(key)
        if found is None:
            selected = [p for p in self.packs if p.applies_to.selects(ex.model, upstream, ex.tenant)]
            found = Plan.of([Bound(p.name, r, self.checks.get(r.check) if r.check else None)
                             for p in selected for r in p.rules if stage in r.stages])  # fmt: skip
            if len(self._cache) < 10_000:
                self._cache[key] = found
        return found

    # ------------------------------------------------------------------------------------------ request

    def on_request(self, ex: Exchange) -> None:
        """Enforced request-stage blocks on the caller's own words: raises PolicyBlocked."""
        bound = self.rules(ex, "request", None).acting
        if not bound:
            return
        context = self.context(ex)
        for b in bound:
            assert b.check is not None
            findings = b.check(context.request_text, context)
            if findings and self._decide(ex, b, "request", findings[0]) == "block":
                raise PolicyBlocked(b.rule.id, "request")

    # ----------------------------------------------------------------------------------------- response

    def unreadable(self, ex: Exchange, stage: str, reason: str) -> None:
        """An answer no check could read: recorded against every enforced block or redact rule of the stage;
        raises UpstreamUnreadable unless every one of them declares ``fail_open``."""
        bound = self.rules(ex, stage, ex.upstream).acting
        if self.fail_open(bound, ex, stage, reason):
            return
        raise UpstreamUnreadable(
            f"The upstream's answer could not be read ({reason}), so the gateway's policies could not check it; "
            "it was not passed on."
        )

    def fail_open(self, bound: list[Bound], ex: Exchange, stage: str, reason: str) -> bool:
        """Records an unreadable answer against each rule; whether every rule lets it through unchecked."""
        for b in bound:
            action, mode = ("allow", "fail_open") if b.rule.fail_open else ("block", "fail_closed")
            self._record(ex, b, stage, action, mode, "unreadable", {"reason": reason})
        ex.policy_flagged = ex.policy_flagged or bool(bound)
        return all(b.rule.fail_open for b in bound)

    def on_response(
        self, ex: Exchange, body: bytes, parsed: dict[str, Any], stage: str = "response"
    ) -> tuple[bytes, str | None]:
        """Enforced response-stage block and redact rules on every readable field (protocol/readable.py) of every
        choice of a complete answer (``parsed``: its body, parsed once by the relay): the body to send (redacted
        when a rule redacts) and the policy header value; raises PolicyBlocked for an enforced block."""
        bound = self.rules(ex, stage, ex.upstream).acting
        if not bound:
            return body, None
        choices = parsed.get("choices")
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            if "choices" not in parsed and "error" in parsed:
                return body, None  # an error in a 200: no answer to read
            self.unreadable(ex, stage, "not an OpenAI answer")  # raises unless every rule fails open
            return body, None
        context = self.context(ex)
        actions: set[str] = set()
        for choice in choices:
            for _, path, text in fields(choice):
                if text:
                    spans = self._choice(ex, bound, text, context, actions, stage)
                    if spans:
                        set_field(choice, path, redacted(text, spans))
        if "redact" not in actions:
            return body, None
        return orjson.dumps(parsed), "redacted"

    def _choice(
        self, ex: Exchange, bound: list[Bound], text: str, context: Context, actions: set[str], stage: str
    ) -> list[tuple[int, int]]:
        """The spans to redact in one choice's text; raises PolicyBlocked for an enforced block."""
        spans = []
        read = normal(text)
        for b in bound:
            assert b.check is not None
            for finding in checked(b.check, read, context):
                action = self._decide(ex, b, stage, finding)
                if action == "block":
                    raise PolicyBlocked(b.rule.id, stage)
                if action == "redact":
                    spans.append((finding.start, finding.end))
                actions.add(action)
        return spans

    # ------------------------------------------------------------------------------------------- stream

    def stream_guard(self, ex: Exchange, wants_usage: bool = False) -> StreamGuard | None:
        """A guard when an enforced block or redact rule applies to this stream; None otherwise."""
        plan = self.rules(ex, "stream", ex.upstream)
        if not plan.acting:
            return None
        enforced = [GuardRule(b.rule.id, b.check, b.rule.action) for b in plan.acting if b.check is not None]
        bound = plan.by_id

        def decide(rule: str, finding: Finding) -> None:
            self._decide(ex, bound[rule], "stream", finding)

        def unreadable(reason: str) -> bool:
            return self.fail_open([bound[r.id] for r in enforced], ex, "stream", reason)

        return StreamGuard(enforced, self.context(ex), self.window, decide, unreadable, wants_usage,
                           self.stream_hold == "sentence")  # fmt: skip

    def while_waiting(self, ex: Exchange) -> None:
        """While the upstream works on the answer: the request stage's flag, allow and shadow rules on the
        caller's words, and what the answer's rules derive from the request alone (``prepare``), so that after
        the answer only the answer is left to read."""
        if ex.policy_asked:
            return  # the answer came first: ``after_answer`` has read what it needed
        self._asked(ex)
        for b in self.rules(ex, "stream" if ex.stream else "response", ex.upstream).watching:
            prepare = getattr(b.check, "prepare", None)
            if prepare is not None:
                prepare(self.context(ex))

    def after_answer(self, ex: Exchange, streamed: bool, texts: list[str]) -> None:
        """Flag, allow and shadow rules, once the answer has gone out (or failed): the request stage's on the
        caller's words (unless ``while_waiting`` ran them), the response's or stream's on each choice's whole
        text. One decision per rule and text (a flag is a mark on the exchange, not a span)."""
        self._asked(ex)
        stage = "stream" if streamed else "response"
        answered = self.rules(ex, stage, ex.upstream).watching
        if not (answered and texts):
            return
        context = self.context(ex)
        for text in texts:
            read = normal(text)
            for b in answered:
                assert b.check is not None
                for finding in checked(b.check, read, context)[:1]:
                    self._decide(ex, b, stage, finding)

    def _asked(self, ex: Exchange) -> None:
        """The request stage's flag, allow and shadow rules, once per exchange."""
        if ex.policy_asked:
            return
        ex.policy_asked = True
        for b in self.rules(ex, "request", None).watching:
            assert b.check is not None
            context = self.context(ex)
            for finding in b.check(context.request_text, context)[:1]:
                self._decide(ex, b, "request", finding)

    def context(self, ex: Exchange) -> Context:
        """The exchange's Context, built once: what checks derive from the request is shared by its stages."""
        context = ex.policy_context
        if not isinstance(context, Context):
            context = ex.policy_context = context_of(ex.payload or {})
        return context

    # ------------------------------------------------------------------------------------------ records

    def _decide(self, ex: Exchange, b: Bound, stage: str, finding: Finding) -> str:
        """Records one decision; returns the action to take ("none" for a shadowed rule)."""
        rule = b.rule
        self._record(ex, b, stage, rule.action, "shadow" if rule.shadow else "enforced", finding.check, finding.detail)
        if rule.shadow:
            return "none"
        if rule.action in ("flag", "block", "redact"):
            ex.policy_flagged = True
        return rule.action

    def _record(self, ex: Exchange, b: Bound, stage: str, action: str, mode: str, check: str,
                detail: dict[str, Any]) -> None:  # fmt: skip
        """One decision to the audit log, the metrics and the exchange (which the sampler ships)."""
        decision = {"rule": b.rule.id, "stage": stage, "action": action, "mode": mode, "check": check, "detail": detail}
        self.audit.record({"request_id": ex.request_id, "tenant": ex.tenant, "model": ex.model,
                           "upstream": ex.upstream, "pack": b.pack, **decision})  # fmt: skip
        self.metrics.decisions.labels(b.rule.id, stage, action, mode).inc()
        ex.policy.append(decision)


def _acts(b: Bound) -> bool:
    """Whether the rule can change what is sent (an enforced block or redact), so runs before it is sent."""
    return not b.rule.shadow and b.rule.action in ("block", "redact")


def checked(check: Check, read: Normal, context: Context) -> list[Finding]:
    """The check's findings on the normal text, at the offsets of the text as written."""
    findings = check(read.text, context)
    if read.starts is None or not findings:
        return findings
    return [Finding(f.check, *read.span(f.start, f.end), f.detail) for f in findings]


def context_of(payload: dict[str, Any]) -> Context:
    """The caller's own words (user turns, tool results, a completion prompt) and the system prompt, normal
    (text/normal.py) as every check reads text."""
    user: list[str] = []
    system: list[str] = []
    messages = payload.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        text = _text(message.get("content"))
        (system if message.get("role") in ("system", "developer") else user).append(text)
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        user.append(prompt)
    return Context(normal_text("\n".join(user)), normal_text("\n".join(system)))


def redacted(text: str, spans: list[tuple[int, int]]) -> str:
    out, position = [], 0
    for start, end in sorted(spans):
        if end <= position:
            continue
        out.append(text[position : max(position, start)])
        out.append(REDACTED)
        position = max(position, end)
    out.append(text[position:])
    return "".join(out)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
