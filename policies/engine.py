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
from protocol.errors import GatewayError
from protocol.exchange import Exchange

DEFAULT_WINDOW_CHARS = 200


class PolicyBlocked(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "content_policy_violation"

    def __init__(self, rule: str, stage: str) -> None:
        what = "request" if stage == "request" else "response"
        super().__init__(f"The {what} was blocked by the gateway's policy rule '{rule}'.", param=None)
        self.rule = rule


@dataclass(frozen=True, slots=True)
class Bound:
    """A rule of a pack, with the check it runs."""

    pack: str
    rule: Rule
    check: Check | None


class PolicyEngine:
    def __init__(self, packs: list[Pack], checks: dict[str, Check], audit: AuditLog, metrics: PolicyMetrics,
                 window_chars: int = DEFAULT_WINDOW_CHARS) -> None:  # fmt: skip
        self.packs = packs
        self.checks = checks
        self.audit = audit
        self.metrics = metrics
        self.window = window_chars
        self._cache: dict[tuple[str, str | None, str, str], list[Bound]] = {}
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

    def rules(self, ex: Exchange, stage: str, upstream: str | None) -> list[Bound]:
        """The rules of this stage that apply to the exchange's model, upstream and tenant (cached)."""
        key = (ex.model, upstream, ex.tenant, stage)
        found = self._cache.get(key)
        if found is None:
            selected = [p for p in self.packs if p.applies_to.selects(ex.model, upstream, ex.tenant)]
            found = [Bound(p.name, r, self.checks.get(r.check) if r.check else None)
                     for p in selected for r in p.rules if stage in r.stages]  # fmt: skip
            if len(self._cache) < 10_000:
                self._cache[key] = found
        return found

    # ------------------------------------------------------------------------------------------ request

    def on_request(self, ex: Exchange) -> None:
        """Enforced request-stage blocks on the caller's own words: raises PolicyBlocked."""
        bound = [b for b in self.rules(ex, "request", None) if _acts(b)]
        if not bound:
            return
        context = self.context(ex)
        for b in bound:
            assert b.check is not None
            findings = b.check(context.request_text, context)
            if findings and self._decide(ex, b, "request", findings[0]) == "block":
                raise PolicyBlocked(b.rule.id, "request")

    # ----------------------------------------------------------------------------------------- response

    def on_response(self, ex: Exchange, body: bytes, parsed: dict[str, Any]) -> tuple[bytes, str | None]:
        """Enforced response-stage block and redact rules on every choice of a complete answer (``parsed``: its
        body, parsed once by the relay): the body to send (redacted when a rule redacts) and the policy header
        value; raises PolicyBlocked for an enforced block."""
        bound = [b for b in self.rules(ex, "response", ex.upstream) if _acts(b)]
        if not bound:
            return body, None
        choices = parsed.get("choices")
        if not isinstance(choices, list):
            return body, None
        context = self.context(ex)
        actions: set[str] = set()
        for choice in choices:
            text = _choice_text(choice)
            if text:
                spans = self._choice(ex, bound, text, context, actions)
                if spans:
                    _set_choice_text(choice, redacted(text, spans))
        if "redact" not in actions:
            return body, None
        return orjson.dumps(parsed), "redacted"

    def _choice(
        self, ex: Exchange, bound: list[Bound], text: str, context: Context, actions: set[str]
    ) -> list[tuple[int, int]]:
        """The spans to redact in one choice's text; raises PolicyBlocked for an enforced block."""
        spans = []
        for b in bound:
            assert b.check is not None
            for finding in b.check(text, context):
                action = self._decide(ex, b, "response", finding)
                if action == "block":
                    raise PolicyBlocked(b.rule.id, "response")
                if action == "redact":
                    spans.append((finding.start, finding.end))
                actions.add(action)
        return spans

    # ------------------------------------------------------------------------------------------- stream

    def stream_guard(self, ex: Exchange) -> StreamGuard | None:
        """A guard when an enforced block or redact rule applies to this stream; None otherwise."""
        enforced = [GuardRule(b.rule.id, b.check, b.rule.action) for b in self.rules(ex, "stream", ex.upstream)
                    if b.check is not None and _acts(b)]  # fmt: skip
        if not enforced:
            return None
        bound = {b.rule.id: b for b in self.rules(ex, "stream", ex.upstream)}

        def decide(rule: str, finding: Finding) -> None:
            self._decide(ex, bound[rule], "stream", finding)

        return StreamGuard(enforced, self.context(ex), self.window, decide)

    def while_waiting(self, ex: Exchange) -> None:
        """While the upstream works on the answer: the request stage's flag, allow and shadow rules on the
        caller's words, and what the answer's rules derive from the request alone (``prepare``), so that after
        the answer only the answer is left to read."""
        if ex.policy_asked:
            return  # the answer came first: ``after_answer`` has read what it needed
        self._asked(ex)
        for b in self.rules(ex, "stream" if ex.stream else "response", ex.upstream):
            prepare = getattr(b.check, "prepare", None)
            if prepare is not None and not _acts(b):
                prepare(self.context(ex))

    def after_answer(self, ex: Exchange, streamed: bool, texts: list[str]) -> None:
        """Flag, allow and shadow rules, once the answer has gone out (or failed): the request stage's on the
        caller's words (unless ``while_waiting`` ran them), the response's or stream's on each choice's whole
        text. One decision per rule and text (a flag is a mark on the exchange, not a span)."""
        self._asked(ex)
        stage = "stream" if streamed else "response"
        answered = [b for b in self.rules(ex, stage, ex.upstream) if b.check is not None and not _acts(b)]
        if not (answered and texts):
            return
        context = self.context(ex)
        for text in texts:
            for b in answered:
                assert b.check is not None
                for finding in b.check(text, context)[:1]:
                    self._decide(ex, b, stage, finding)

    def _asked(self, ex: Exchange) -> None:
        """The request stage's flag, allow and shadow rules, once per exchange."""
        if ex.policy_asked:
            return
        ex.policy_asked = True
        for b in self.rules(ex, "request", None):
            if not _acts(b):
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
        mode = "shadow" if rule.shadow else "enforced"
        entry = {"request_id": ex.request_id, "tenant": ex.tenant, "model": ex.model, "upstream": ex.upstream,
                 "pack": b.pack, "rule": rule.id, "stage": stage, "action": rule.action, "mode": mode,
                 "check": finding.check, "detail": finding.detail}  # fmt: skip
        self.audit.record(entry)
        self.metrics.decisions.labels(rule.id, stage, rule.action, mode).inc()
        ex.policy.append({"rule": rule.id, "stage": stage, "action": rule.action, "mode": mode,
                          "check": finding.check, "detail": finding.detail})  # fmt: skip
        if rule.shadow:
            return "none"
        if rule.action in ("flag", "block", "redact"):
            ex.policy_flagged = True
        return rule.action


def _acts(b: Bound) -> bool:
    """Whether the rule can change what is sent (an enforced block or redact), so runs before it is sent."""
    return not b.rule.shadow and b.rule.action in ("block", "redact")


def context_of(payload: dict[str, Any]) -> Context:
    """The caller's own words (user turns, tool results, a completion prompt) and the system prompt."""
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
    return Context("\n".join(user), "\n".join(system))


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


def _choice_text(choice: Any) -> str:
    if not isinstance(choice, dict):
        return ""
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else ""


def _set_choice_text(choice: dict[str, Any], text: str) -> None:
    message = choice.get("message")
    if isinstance(message, dict):
        message["content"] = text
    else:
        choice["text"] = text
