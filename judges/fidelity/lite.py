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

Each NO and each unsupported claim carries a confidence, and only confident ones lower a score (the others are
listed as uncertain). Numbers, the side (left, right) and negation are compared exactly: a number for a number, a
flipped negation or a swapped side is a contradiction with confidence 1. Other words are weighed by how specific
they are: a word that is rare in English at large (wordfreq's Zipf frequency below RARE_ZIPF: "mycoplasma",
"phlebotomy", "fluoxetine") names a clinical specific; a common one ("given", "shows", "heart attack") may just be
how the writer put it. A substitution is as confident as the less specific of the two words swapped (both must be
specific: "Streptococcus" for "Mycoplasma", not "high blood pressure" for "hypertension"); an unsupported claim as
its most specific word that the source holds nowhere. A word the source holds in another sentence is no new claim.

The answers go through the same CEF formulas as the LLM judge (``judges.fidelity.cef``). What this catches:
substituted entities and terms, wrong numbers and units, flipped negation, added specific claims. What it
cannot judge: entailment and reasoning, and a change made in common words (it lists those as uncertain); those
need ``cef-llm``. The two methods are different series and are never merged.
"""

from __future__ import annotations

import asyncio
import functools
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
# Specificity of a word from its frequency in English (wordfreq's Zipf scale: 6 is "the", 3 once per million
# words): 0 at COMMON_ZIPF and above, 1 at RARE_ZIPF and below (words absent from wordfreq's small English list,
# which holds those above 3), linear in between. CONFIDENT: the specificity a finding needs to count.
COMMON_ZIPF = 4.5
RARE_ZIPF = 3.0
CONFIDENT = 0.5
SIDES = frozenset({"left", "right"})


@dataclass(frozen=True, slots=True)
class Alignment:
    """A candidate sentence, the source sentences aligned to it, and what does not match."""

    sentence: Statement
    source: tuple[Statement, ...]  # primary first; empty when no source sentence shares a term
    unsupported: frozenset[str]  # the candidate's terms the aligned source sentences do not hold
    dropped: frozenset[str]  # the aligned source sentences' terms the candidate sentence does not hold
    abbreviated: frozenset[str] = frozenset()  # source terms the candidate sentence holds as abbreviations

    def confidence(self, everywhere: frozenset[str]) -> float:
        """How sure the mismatch is: of a substitution, the less specific side of the swap; of an addition, its most
        specific term that the source (``everywhere``: all its sentences' terms) holds nowhere."""
        if not self.unsupported:
            return 0.0
        if all(_flip(term) in self.dropped for term in self.unsupported):
            return 1.0  # negation flipped, and nothing else changed ("no fever" for "afebrile" is no flip)
        if not self.substitution:
            new = [t for t in self.unsupported if t not in everywhere]
            return max((specificity(t, self.sentence.words[t]) for t in new), default=0.0)
        replaced = {t: s.words[t] for s in self.source for t in self.dropped & s.terms}
        kinds = {_kind(t) for t in replaced} - {""}
        if any(_kind(t) in kinds or self.sentence.words[t].isdigit() for t in self.unsupported if _kind(t)):
            return 1.0  # a number in digits in place of what the source says, a side for a side
        added = max(specificity(t, self.sentence.words[t]) for t in self.unsupported)
        return min(added, max(specificity(t, w) for t, w in replaced.items()))

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
    unsupported, abbreviated = sentence.terms - covered, frozenset[str]()
    for term in [t for t in unsupported if not t.startswith("no:")]:  # abbreviations of the source's words
        expanded = frozenset().union(*(s.shortened(sentence.words[term]) for s in chosen))
        if expanded:
            unsupported, dropped, abbreviated = unsupported - {term}, dropped - expanded, abbreviated | expanded
    return Alignment(sentence, tuple(chosen), unsupported, dropped, abbreviated)


def _flip(term: str) -> str:
    return term[3:] if term.startswith("no:") else f"no:{term}"


def _kind(term: str) -> str:
    """The kind of the terms compared exactly besides negation: "number" or "side"; "" for words and for a negated
    number (a negation's scope running over a number is how a sentence was put, not a claim)."""
    if term.startswith("no:"):
        return "side" if term[3:] in SIDES else ""
    return "number" if term[:1].isdigit() else "side" if term in SIDES else ""


@functools.lru_cache(maxsize=1 << 16)
def specificity(term: str, word: str) -> float:
    """1 for a number or a side; for a word, how rare it is in English (see COMMON_ZIPF)."""
    if _kind(term) == "side" or (_kind(term) == "number" and word[:1].isdigit()):
        return 1.0
    if _kind(term):
        return 0.0  # a number in words ("two-sided")
    from wordfreq import zipf_frequency  # 15 MB: loaded only where cef-lite runs

    zipf = zipf_frequency(word, "en", wordlist="small")
    return min(1.0, max(0.0, (COMMON_ZIPF - zipf) / (COMMON_ZIPF - RARE_ZIPF)))


def aligned(source: list[Statement], candidate: list[Statement]) -> tuple[list[Alignment], dict[int, float]]:
    """Every candidate sentence aligned to the source, and how sure each alignment's mismatch is (by ``id``)."""
    everywhere = frozenset().union(*(s.terms for s in source))
    alignments = [align(sentence, source) for sentence in candidate]
    return alignments, {id(a): a.confidence(everywhere) for a in alignments}


def questions(
    source: list[Statement], candidate: list[Statement], overruled: dict[int, dict[str, object]] | None = None
) -> tuple[list[Question], list[Question]]:
    """The answered source and candidate questions of one pair of texts."""
    alignments, sure = aligned(source, candidate)
    return questions_of(source, alignments, sure, overruled or {})


def questions_of(
    source: list[Statement], alignments: list[Alignment], sure: dict[int, float],
    decided: dict[int, dict[str, object]],
) -> tuple[list[Question], list[Question]]:  # fmt: skip
    """The questions of aligned texts; ``decided``: what a second method said of an alignment's mismatch (by
    ``id``; ``"overruled": True`` when it found none), added to the evidence of its questions."""
    candidate_questions = [_candidate_question(a, sure[id(a)], decided.get(id(a), {})) for a in alignments]
    source_questions = [_source_question(s, [a for a in alignments if s in a.source], sure, decided) for s in source]
    return source_questions, candidate_questions


def _candidate_question(a: Alignment, confidence: float, decided: dict[str, object]) -> Question:
    on_source: Answer = "YES" if not a.unsupported else "NO" if a.substitution else "IDK"
    detail: dict[str, object] = {"terms": _words(a.sentence, a.unsupported)}
    if on_source == "NO":
        detail["instead_of"] = [w for s in a.source for w in _words(s, a.dropped & s.terms)][:EVIDENCE_TERMS]
    return Question(f"candidate sentence {a.sentence.index + 1}", on_source, "YES", detail | decided, confidence,
                    overruled=decided.get("overruled") is True)  # fmt: skip


def _source_question(
    sentence: Statement, aligned: list[Alignment], sure: dict[int, float], decided: dict[int, dict[str, object]]
) -> Question:
    held = frozenset().union(*(a.sentence.terms | a.abbreviated for a in aligned)) & sentence.terms
    swapped = sorted((a for a in aligned if a.substitution and a.dropped & sentence.terms),
                     key=lambda a: (decided.get(id(a), {}).get("overruled") is True, -sure[id(a)]))  # fmt: skip
    on_candidate: Answer
    confidence = 1.0
    overruled = False
    detail: dict[str, object]
    if swapped:
        on_candidate, confidence = "NO", sure[id(swapped[0])]
        detail = {"terms": _words(sentence, swapped[0].dropped), "instead": _words(swapped[0].sentence,
                  swapped[0].unsupported), **decided.get(id(swapped[0]), {})}  # fmt: skip
        overruled = detail.get("overruled") is True
    elif len(held) < MENTIONED_SHARE * len(sentence.terms):
        on_candidate = "IDK"
        detail = {"terms": _words(sentence, sentence.terms - held)}
    else:
        on_candidate, detail = "YES", {}
    return Question(f"source sentence {sentence.index + 1}", "YES", on_candidate, detail, confidence, overruled)


def _words(sentence: Statement, terms: frozenset[str]) -> list[str]:
    """Up to EVIDENCE_TERMS of ``terms`` as written, in sentence order ("no " before negated ones)."""
    ordered = [t for t in sentence.words if t in terms][:EVIDENCE_TERMS]
    return [f"no {sentence.words[t]}" if t.startswith("no:") else sentence.words[t] for t in ordered]


def score(task: Task, confident: float = CONFIDENT) -> cef.Scores:
    """The CEF scores of one task's candidate against its source."""
    source_questions, candidate_questions = questions(statements(task.source), statements(task.candidate))
    return cef.scores(task, source_questions, candidate_questions, confident)


def judge_encoded(samples: list[bytes]) -> list[list[bytes]]:
    """``CefLiteJudge.judge`` on JSON samples, returning JSON results: what a judge process runs."""
    judge = CefLiteJudge()
    return [[r.model_dump_json().encode() for r in judge.judge(Sample.model_validate_json(s))] for s in samples]


class CefLiteJudge:
    """Judge "cef-lite" (method "cef-lite/3"): the four fidelity results per sample (docs/judges.md).

    Milliseconds of pure-Python CPU per sample: in a worker process it runs in a thread; embedded in the
    gateway (``processes=1``) it runs in a process of its own, since in a thread it would hold the
    interpreter lock the gateway's requests need (docs/performance.md measures both)."""

    name: str = "cef-lite"
    method: str = "cef-lite/3"
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
