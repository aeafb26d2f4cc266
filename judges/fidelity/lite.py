"""The CPU fidelity judge ``cef-lite``: CEF's scores from sentence alignment of clinical terms, without an LLM.

docs/judges.md section 1. Each sentence of the source S stands for a source question ("does the text state
this?") and each sentence of the candidate C for a candidate question. Sentences are sets of normalised
terms (``judges.fidelity.text``). A candidate sentence is aligned to the source sentence that shares most of
its terms, plus any other source sentence mostly contained in it (merged sentences); then

* a candidate sentence all of whose terms the aligned source sentences hold: S answers YES;
* one with terms S does not hold where the aligned source sentences hold terms C dropped, and which is
  otherwise backed (at least as many terms held as not: a substitution of another drug, organism,
  diagnosis, number, side, or a flipped negation): S answers NO;
* one with terms S does not hold and nothing swapped out: S answers IDK (an unsupported addition);
* a source sentence is answered by the candidate sentences aligned to it: IDK when they hold less than
  half of its terms (omitted), NO when one of them is a substitution of it, YES otherwise.

The answers go through the same CEF formulas as the LLM judge (``judges.fidelity.cef``). What this catches:
substituted entities and terms, wrong numbers and units, flipped negation, added claims. What it cannot
judge: synonyms outside its abbreviation table, entailment and reasoning; those need ``cef-llm``. The two
methods are different series and are never merged.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from judges.fidelity import cef
from judges.fidelity.cef import Answer, Question
from judges.fidelity.task import Task, applicable, classify
from judges.fidelity.text import Statement, statements
from pipeline.sample import Result, Sample

MERGED_SHARE = 0.6  # a further source sentence joins an alignment when this share of its terms is in C's sentence
MENTIONED_SHARE = 0.5  # a source sentence is answered when its aligned candidate sentences hold this share
EVIDENCE_TERMS = 8


@dataclass(frozen=True, slots=True)
class Alignment:
    """A candidate sentence, the source sentences aligned to it, and what does not match."""

    sentence: Statement
    source: tuple[Statement, ...]  # primary first; empty when no source sentence shares a term
    unsupported: frozenset[str]  # the candidate's terms the aligned source sentences do not hold
    dropped: frozenset[str]  # the aligned source sentences' terms the candidate sentence does not hold

    @property
    def substitution(self) -> bool:
        """Terms swapped for others in a sentence that is otherwise backed (most of its terms held): a
        sentence sharing only a word or two with the source is an addition, not a substitution."""
        if not self.unsupported or not self.dropped:
            return False
        flipped = any(_flip(term) in self.dropped for term in self.unsupported)
        return flipped or len(self.sentence.terms) - len(self.unsupported) >= len(self.unsupported)


def align(sentence: Statement, source: list[Statement]) -> Alignment:
    """Align one candidate sentence to the source sentences (see the module docstring)."""
    ranked = sorted(source, key=lambda s: (-len(s.terms & sentence.terms), len(s.terms - sentence.terms)))
    if not ranked or not ranked[0].terms & sentence.terms:
        return Alignment(sentence, (), sentence.terms, frozenset())
    primary, chosen = ranked[0], [ranked[0]]
    covered = set(primary.terms & sentence.terms)
    for other in ranked[1:]:
        shared = other.terms & sentence.terms
        if shared - covered and len(shared) >= MERGED_SHARE * len(other.terms):
            chosen.append(other)
            covered |= shared
    dropped = frozenset().union(*(s.terms for s in chosen)) - sentence.terms
    return Alignment(sentence, tuple(chosen), sentence.terms - covered, dropped)


def _flip(term: str) -> str:
    return term[3:] if term.startswith("no:") else f"no:{term}"


def questions(source: list[Statement], candidate: list[Statement]) -> tuple[list[Question], list[Question]]:
    """The answered source and candidate questions of one pair of texts."""
    alignments = [align(sentence, source) for sentence in candidate]
    candidate_questions = [_candidate_question(a) for a in alignments]
    source_questions = [_source_question(s, [a for a in alignments if s in a.source]) for s in source]
    return source_questions, candidate_questions


def _candidate_question(a: Alignment) -> Question:
    on_source: Answer = "YES" if not a.unsupported else "NO" if a.substitution else "IDK"
    detail = {"terms": _words(a.sentence, a.unsupported)}
    if on_source == "NO":
        detail["instead_of"] = [w for s in a.source for w in _words(s, a.dropped & s.terms)][:EVIDENCE_TERMS]
    return Question(f"candidate sentence {a.sentence.index + 1}", on_source, "YES", detail)


def _source_question(sentence: Statement, aligned: list[Alignment]) -> Question:
    held = frozenset().union(*(a.sentence.terms for a in aligned)) & sentence.terms
    swapped = [a for a in aligned if a.substitution and a.dropped & sentence.terms]
    on_candidate: Answer
    if swapped:
        on_candidate = "NO"
        detail = {"terms": _words(sentence, swapped[0].dropped), "instead": _words(swapped[0].sentence,
                  swapped[0].unsupported)}  # fmt: skip
    elif len(held) < MENTIONED_SHARE * len(sentence.terms):
        on_candidate = "IDK"
        detail = {"terms": _words(sentence, sentence.terms - held)}
    else:
        on_candidate, detail = "YES", {}
    return Question(f"source sentence {sentence.index + 1}", "YES", on_candidate, detail)


def _words(sentence: Statement, terms: frozenset[str]) -> list[str]:
    """Up to EVIDENCE_TERMS of ``terms`` as written, in sentence order ("no " before negated ones)."""
    ordered = [t for t in sentence.words if t in terms][:EVIDENCE_TERMS]
    return [f"no {sentence.words[t]}" if t.startswith("no:") else sentence.words[t] for t in ordered]


def score(task: Task) -> cef.Scores:
    """The CEF scores of one task's candidate against its source."""
    source_questions, candidate_questions = questions(statements(task.source), statements(task.candidate))
    return cef.scores(task, source_questions, candidate_questions)


def judge_encoded(samples: list[bytes]) -> list[list[bytes]]:
    """``CefLiteJudge.judge`` on JSON samples, returning JSON results: what a judge process runs."""
    judge = CefLiteJudge()
    return [[r.model_dump_json().encode() for r in judge.judge(Sample.model_validate_json(s))] for s in samples]


class CefLiteJudge:
    """Judge "cef-lite" (method "cef-lite/2"): the four fidelity results per sample (docs/judges.md).

    Milliseconds of pure-Python CPU per sample: in a worker process it runs in a thread; embedded in the
    gateway (``processes=1``) it runs in a process of its own, since in a thread it would hold the
    interpreter lock the gateway's requests need (docs/performance.md measures both)."""

    name: str = "cef-lite"
    method: str = "cef-lite/2"
    batch_size: int = 32

    def __init__(self, processes: int = 0) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def applies(self, sample: Sample) -> bool:
        return applicable(sample)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        if not self.processes:
            return await asyncio.to_thread(lambda: [self.judge(sample) for sample in samples])
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = ProcessPoolExecutor(self.processes, mp_context=context)
        encoded = [s.model_dump_json().encode() for s in samples]
        judged = await asyncio.get_running_loop().run_in_executor(self._pool, judge_encoded, encoded)
        return [[Result.model_validate_json(r) for r in results] for results in judged]

    def judge(self, sample: Sample) -> list[Result]:
        """The results for one sample (synchronous, pure CPU: about 12 ms for a pair of 350-word notes)."""
        started = time.perf_counter()
        task = classify(sample) if applicable(sample) else None
        found = score(task) if task is not None else None
        return cef.results(sample, self.method, task, found, time.perf_counter() - started)
