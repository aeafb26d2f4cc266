"""The CPU fidelity judge ``cef-lite``: CEF's coverage, conformity and consistency from extracted facts.

docs/judges.md section 1. Source S is the material the user supplied (a long user message, the text after a
marker such as "Note:" or "Summarise the following", fenced or quoted blocks, tool results), never the
system prompt; candidate C is the assistant output without ``<think>`` blocks. Each fact of S stands for a
source question QS and each fact of C for a candidate question QC; a text "answers" a fact when it holds a
fact of the same (kind, key), and the answers agree when one of them has the same value and negation.

    coverage    = 1 - omitted / |QS*|        (source facts C does not mention)
    conformity  = 1 - contradicted / |QS*|   (source facts C states differently)
    consistency = 1 - (unsupported + contradicted) / |QC*|   (candidate facts S does not back)

A score is null when its denominator is empty, and all three are null (label "not_applicable") when no
source can be found: an open question has nothing to be faithful to. What this catches: substituted drugs,
organisms, diagnoses and sides, wrong numbers and units, flipped negation. What it cannot judge: paraphrase
outside its lexicons, entailment and reasoning; those need ``cef-llm``. Never merge the two series.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from judges.fidelity.facts import Fact, extract
from judges.sample import Result, Sample

OPERATIONS = frozenset({"chat", "text_completion"})
SOURCE_MIN_WORDS = 40  # a user message this long is supplied material even without a marker
MAX_EVIDENCE = 20
INDICATORS = ("fidelity_coverage", "fidelity_conformity", "fidelity_consistency")
SOURCE_ROLES = frozenset({"tool", "function"})
Evidence = list[dict[str, Any]]

THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
# What follows one of these markers (to the end of the message) is material; what precedes is the instruction.
MARKER = re.compile(
    r"(?:\b(?:note|context|document|report|transcript|text|summary|discharge\s+summary|history)\s*:"
    r"|\bsummari[sz]e\s+(?:the\s+)?following(?:\s+\w+){0,3}\s*:?)",
    re.IGNORECASE,
)
BLOCK = re.compile(r"```[^\n]*\n?(.*?)```|\"\"\"(.*?)\"\"\"|“([^”]{80,})”|\"([^\"\n]{80,})\"", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Scores:
    """The three scores (None when not computable) and the mismatching facts behind them."""

    coverage: float | None
    conformity: float | None
    consistency: float | None
    omitted: tuple[dict[str, Any], ...] = ()  # evidence of coverage
    contradicted: tuple[dict[str, Any], ...] = ()  # evidence of conformity
    unsupported: tuple[dict[str, Any], ...] = ()  # evidence of consistency (unsupported or contradicting)


def source_text(sample: Sample) -> str:
    """The supplied material of a request ("" when there is none): tool results, marked or fenced parts of
    user messages, and whole user messages of SOURCE_MIN_WORDS words or more. System prompts never count."""
    parts: list[str] = []
    for message in sample.messages():
        role = message.get("role")
        content = _content(message.get("content"))
        if role in SOURCE_ROLES:
            parts.append(content)
        elif role == "user":
            parts.append(_supplied(content))
    prompt = sample.request.get("prompt")
    if isinstance(prompt, str):
        parts.append(_supplied(prompt))
    return "\n".join(p for p in parts if p.strip())


def candidate_text(sample: Sample) -> str:
    """The output without reasoning blocks (an unclosed ``<think>`` hides the rest of the output)."""
    text = sample.output()
    if "</think>" in text and "<think>" not in text:  # servers that strip the opening tag
        text = text.split("</think>", 1)[1]
    return THINK.sub("", text).strip()


def _content(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _supplied(content: str) -> str:
    """The material inside one user message: fenced/quoted blocks, else after a marker, else all of a long one."""
    blocks = [next(g for g in m.groups() if g is not None) for m in BLOCK.finditer(content)]
    if blocks:
        return "\n".join(blocks)
    marker = MARKER.search(content)
    if marker is not None and len(content[marker.end() :].split()) > 0:
        return content[marker.end() :]
    return content if len(content.split()) >= SOURCE_MIN_WORDS else ""


def score(source: str, candidate: str) -> Scores:
    """The three CEF scores of ``candidate`` against ``source`` (see the module docstring)."""
    qs = _questions(extract(source))
    qc = _questions(extract(candidate))
    omitted, contradicted = _mismatches(qs, qc, "omitted", "contradicted")
    unsupported, contradicting = _mismatches(qc, qs, "unsupported", "contradicts_source")
    return Scores(
        coverage=_ratio(len(omitted), len(qs)),
        conformity=_ratio(len(contradicted), len(qs)),
        consistency=_ratio(len(unsupported) + len(contradicting), len(qc)),
        omitted=tuple(omitted[:MAX_EVIDENCE]),
        contradicted=tuple(contradicted[:MAX_EVIDENCE]),
        unsupported=tuple((unsupported + contradicting)[:MAX_EVIDENCE]),
    )


def _mismatches(questions: list[Fact], other: list[Fact], silent: str, differs: str) -> tuple[Evidence, Evidence]:
    """The questions the other text does not answer (``silent``) and those it answers differently (``differs``)."""
    unanswered: Evidence = []
    different: Evidence = []
    for fact in questions:
        if _agrees(fact, other):
            continue
        answer = _answer(fact, other)
        if answer is None:
            unanswered.append(_evidence(silent, fact, None))
        else:
            different.append(_evidence(differs, fact, answer))
    return unanswered, different


def _questions(facts: list[Fact]) -> list[Fact]:
    """One question per distinct statement: repeating a fact in another sentence does not weigh it more."""
    seen: dict[tuple[str, str, str, bool], Fact] = {}
    for fact in facts:
        seen.setdefault((fact.kind, fact.key, fact.value, fact.negated), fact)
    return list(seen.values())


def _agrees(fact: Fact, other: list[Fact]) -> bool:
    return any(
        o.kind == fact.kind and o.key == fact.key and o.value == fact.value and o.negated == fact.negated for o in other
    )


def _answer(fact: Fact, other: list[Fact]) -> str | None:
    """How the other text states the fact's (kind, key): its value ("no" prefix when negated), None if silent."""
    for o in other:
        if o.kind == fact.kind and o.key == fact.key:
            return f"no {o.value}" if o.negated else o.value
    return None


def _evidence(mismatch: str, fact: Fact, answer: str | None) -> dict[str, Any]:
    """A short record of one mismatching fact: never the sentence it came from."""
    value = f"no {fact.value}" if fact.negated else fact.value
    return {"mismatch": mismatch, "kind": fact.kind, "key": fact.key, "value": value, "other": answer}


def _ratio(bad: int, total: int) -> float | None:
    return None if total == 0 else 1.0 - bad / total


class CefLiteJudge:
    """Judge "cef-lite": per sample, the results "fidelity_coverage", "fidelity_conformity" and
    "fidelity_consistency" (method "cef-lite/1"), each with the mismatching facts as evidence.

    Applies to chat and text completions answered with status 200, with a non-empty output and a source
    (``source_text``). A sample it does not apply to still gets three results from ``judge``, all null.
    """

    name: str = "cef-lite"
    method: str = "cef-lite/1"
    batch_size: int = 32

    def applies(self, sample: Sample) -> bool:
        if sample.operation not in OPERATIONS or sample.status != 200 or not candidate_text(sample):
            return False
        return source_text(sample) != ""

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return [self.judge(sample) for sample in samples]

    def judge(self, sample: Sample) -> list[Result]:
        """The three results for one sample (synchronous: pure CPU, about a millisecond per note)."""
        started = time.perf_counter()
        scores = score(source_text(sample), candidate_text(sample)) if self.applies(sample) else None
        common: dict[str, Any] = {
            "request_id": sample.request_id,
            "traceparent": sample.traceparent,
            "method": self.method,
            "model": sample.model,
            "tenant": sample.tenant,
            "judge_latency_s": time.perf_counter() - started,
        }
        if scores is None:
            return [Result(indicator=i, score=None, label="not_applicable", **common) for i in INDICATORS]
        values = (scores.coverage, scores.conformity, scores.consistency)
        evidence = (scores.omitted, scores.contradicted, scores.unsupported)
        return [
            Result(indicator=i, score=v, label=None if v is not None else "not_computable", evidence=list(e), **common)
            for i, v, e in zip(INDICATORS, values, evidence, strict=True)
        ]
