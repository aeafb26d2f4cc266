"""The Cross-Examination Framework's scores from answered questions, shared by every fidelity method.

docs/judges.md section 1 (the 2026 version). Source questions QS are phrased so that S answers YES and
candidate questions QC so that C answers YES; each is answered on both texts with YES, NO or IDK:

    QS* = {q in QS : a(q,S) in {YES,NO}}          QC* = {q in QC : a(q,C) in {YES,NO}}
    coverage    = 1 - |{q in QS* : a(q,C) = IDK}| / |QS*|                     (source facts omitted)
    conformity  = 1 - |{q in QS* : a(q,C) not in {IDK, a(q,S)}}| / |QS*|       (source facts contradicted)
    consistency = 1 - |{q in QC* : a(q,S) != a(q,C)}| / |QC*|                  (candidate claims unsupported)
    conciseness = (words(S) - words(C)) / words(S)

A contradicted or unsupported question counts only when the method is confident of it (``Question.confidence`` at
least the method's threshold; an LLM's answers are taken as confident): one it is unsure of lowers no score and is
listed in the evidence with ``"certain": false``, so that alerts act on confident findings alone.

An empty QS* or QC* makes its scores null. A grounded-QA sample gets a null coverage and conciseness (the
answer is not meant to restate the context); an open question gets no scores at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from judges.fidelity.task import Task
from pipeline.sample import Result, Sample

Answer = Literal["YES", "NO", "IDK"]
ANSWERS: tuple[Answer, ...] = ("YES", "NO", "IDK")
INDICATORS = ("fidelity_coverage", "fidelity_conformity", "fidelity_consistency", "fidelity_conciseness")
MAX_EVIDENCE = 20


@dataclass(slots=True)
class Question:
    """One closed question and its answers on the source and on the candidate."""

    text: str  # the question, or for cef-lite the statement it stands for
    on_source: Answer
    on_candidate: Answer
    detail: dict[str, Any] = field(default_factory=dict)  # method-specific evidence (terms, judge answers)
    confidence: float = 1.0  # how sure the method is of a mismatch in these answers (1: an LLM's answers)
    overruled: bool = False  # a second method (a judge model) found no mismatch: it counts as uncertain

    def counts(self, confident: float) -> bool:
        """Whether the mismatch lowers a score: confident enough, and not overruled."""
        return self.confidence >= confident and not self.overruled

    def record(self, mismatch: str, certain: bool = True) -> dict[str, Any]:
        record = {"mismatch": mismatch, "question": self.text, "on_source": self.on_source,
                  "on_candidate": self.on_candidate, **self.detail}  # fmt: skip
        if self.confidence < 1.0 or not certain:
            record |= {"certain": certain, "confidence": round(self.confidence, 2)}
        return record


@dataclass(frozen=True, slots=True)
class Scores:
    coverage: float | None
    conformity: float | None
    consistency: float | None
    conciseness: float | None
    omitted: list[dict[str, Any]]
    contradicted: list[dict[str, Any]]  # the confident ones first, then those the method is unsure of
    unsupported: list[dict[str, Any]]


def scores(
    task: Task, source_questions: list[Question], candidate_questions: list[Question], confident: float = 1.0
) -> Scores:
    """The CEF scores of one sample from its answered questions (see the module docstring); a mismatch counts when
    its question's confidence is at least ``confident``."""
    qs = [q for q in source_questions if q.on_source != "IDK"]
    qc = [q for q in candidate_questions if q.on_candidate != "IDK"]
    omitted = [q for q in qs if q.on_candidate == "IDK"]
    contradicted = [q for q in qs if q.on_candidate not in ("IDK", q.on_source)]
    unsupported = [q for q in qc if q.on_source != q.on_candidate]
    transform = task.kind == "transform"
    return Scores(
        coverage=_ratio(len(omitted), len(qs)) if transform else None,
        conformity=_ratio(sum(q.counts(confident) for q in contradicted), len(qs)),
        consistency=_ratio(sum(q.counts(confident) for q in unsupported), len(qc)),
        conciseness=conciseness(task.source, task.candidate) if transform else None,
        omitted=[q.record("omitted") for q in omitted[:MAX_EVIDENCE]] if transform else [],
        contradicted=_records("contradicted", contradicted, confident),
        unsupported=_records("unsupported", unsupported, confident),
    )


def _records(mismatch: str, questions: list[Question], confident: float) -> list[dict[str, Any]]:
    """Evidence: up to MAX_EVIDENCE confident mismatches, then up to MAX_EVIDENCE the method is unsure of."""
    certain = [q.record(mismatch) for q in questions if q.counts(confident)][:MAX_EVIDENCE]
    unsure = sorted((q for q in questions if not q.counts(confident)), key=lambda q: -q.confidence)
    return certain + [q.record(mismatch, certain=False) for q in unsure[:MAX_EVIDENCE]]


def conciseness(source: str, candidate: str) -> float | None:
    words = len(source.split())
    return None if words == 0 else (words - len(candidate.split())) / words


def results(sample: Sample, method: str, task: Task | None, found: Scores | None, latency_s: float) -> list[Result]:
    """The four fidelity results of one sample: null with label "not_applicable" when ``found`` is None,
    null with "not_computable" when a denominator was empty."""
    common: dict[str, Any] = {
        "request_id": sample.request_id, "traceparent": sample.traceparent, "method": method,
        "model": sample.model, "tenant": sample.tenant, "judge_latency_s": latency_s,
    }  # fmt: skip
    if found is None or task is None:
        return [Result(indicator=i, score=None, label="not_applicable", **common) for i in INDICATORS]
    values = (found.coverage, found.conformity, found.consistency, found.conciseness)
    evidence: tuple[list[dict[str, Any]], ...] = (found.omitted, found.contradicted, found.unsupported, [])
    out = []
    for indicator, value, records in zip(INDICATORS, values, evidence, strict=True):
        label = task.kind if value is not None else _null_label(task, indicator)
        out.append(Result(indicator=indicator, score=value, label=label, evidence=records, **common))
    return out


def _null_label(task: Task, indicator: str) -> str:
    if task.kind == "grounded_qa" and indicator in ("fidelity_coverage", "fidelity_conciseness"):
        return "not_applicable"
    return "not_computable"


def _ratio(bad: int, total: int) -> float | None:
    return None if total == 0 else 1.0 - bad / total
