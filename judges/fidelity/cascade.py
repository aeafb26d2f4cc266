"""The fidelity cascade ``cef-cascade``: the CPU judge screens, a judge model rules on what it would accuse.

docs/judges.md section 1.5. ``cef-lite`` aligns the candidate's sentences to the source's and finds the
mismatches it is confident of (a substitution, an unsupported claim). Each such mismatch is put to the judge model
(``judging.llm``) as one closed question: the candidate's sentence beside the source sentences it was aligned to,
"does the rewritten version state the same clinical facts?", answered Yes or No, and read as the probability of Yes
from the first token's log-probabilities. A mismatch the model finds the same facts (P(Yes) >= SAME) is overruled:
it lowers no score and is listed as uncertain; the others stand. Every arbitrated finding says what the model
answered (``same_facts``) and which path decided it (``decided_by``), and the method names the model and a hash of
the prompt: ``cef-cascade/<model>/<hash>``. The model is asked once per confident finding, not 2 + 4N times per
sample as ``cef-llm`` asks, and a sample with nothing to accuse costs no call.

Why: a lexical judge reads a clinician's other word for the same thing ("diaphoresis" restated as "heavy
sweating") as a substitution, and no word list covers how people restate notes; a small model tells a restatement
from a changed fact far better than it writes and answers a note's questions (the cef-llm rows of docs/judges.md),
and the planted errors the CPU judge finds are what it is asked about. SAME was set on the tuning half of MEDEC
(docs/judges.md has the curve and the held-out figures).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from judges.backends import JudgeBackend, Messages
from judges.fidelity import cef, lite
from judges.fidelity.task import applicable, classify
from judges.fidelity.text import Statement, statements
from pipeline.sample import Result, Sample

SYSTEM = (
    "You compare two versions of a sentence from a clinical note. Answer Yes if the rewritten version states the "
    "same clinical facts as the original (other words for the same thing are fine), No if it changes a fact: "
    "another diagnosis, drug, dose, test, organism, body part, side, number or plan, or adds one."
)
QUESTION = "Original: {original}\nRewritten: {rewritten}\nDoes the rewritten version state the same clinical facts? " \
    "Answer Yes or No."  # fmt: skip
SAME = 0.3  # P(Yes) at or above which the model overrules a finding (set on the tuning half)
CONTEXT_SENTENCES = 2  # source sentences shown for a candidate sentence aligned to none


def prompt_hash() -> str:
    return hashlib.sha256("\x1f".join((SYSTEM, QUESTION, str(SAME))).encode()).hexdigest()[:12]


def messages(original: str, rewritten: str) -> Messages:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION.format(original=original, rewritten=rewritten)}]  # fmt: skip


def context(a: lite.Alignment, source: list[Statement]) -> str:
    """The source sentences a finding's candidate sentence is read against: those it was aligned to, else the ones
    sharing most of its words, negated or not ("no lymph node swelling" against "lymph nodes are not enlarged")."""
    chosen = list(a.source)
    if not chosen:
        bare = {t.removeprefix("no:") for t in a.sentence.terms}
        shared = [(len(bare & {t.removeprefix("no:") for t in s.terms}), s) for s in source]
        chosen = [s for n, s in sorted(shared, key=lambda x: -x[0])[:CONTEXT_SENTENCES] if n]
    return " ".join(written(s) for s in sorted(chosen, key=lambda s: s.index))


def written(sentence: Statement) -> str:
    """The sentence as written, with the full stop its split took off."""
    return sentence.text if sentence.text[-1:] in ".!?" else f"{sentence.text}."


class CefCascadeJudge:
    """Judge "cef-cascade": cef-lite's confident findings, each ruled on by the judge model."""

    name = "cef-cascade"
    batch_size = 8

    def __init__(self, backend: JudgeBackend, same: float = SAME) -> None:
        self.backend = backend
        self.same = same

    @property
    def method(self) -> str:
        return f"{self.name}/{self.backend.served}/{prompt_hash()}"

    def applies(self, sample: Sample) -> bool:
        return applicable(sample)

    async def close(self) -> None:
        await self.backend.close()

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return list(await asyncio.gather(*(self._judge(sample) for sample in samples)))

    async def _judge(self, sample: Sample) -> list[Result]:
        started = time.perf_counter()
        task = classify(sample) if applicable(sample) else None
        if task is None:
            return cef.results(sample, self.method, None, None, time.perf_counter() - started)
        source, candidate = statements(task.source), statements(task.candidate)
        alignments, sure = lite.aligned(source, candidate)
        accused = [a for a in alignments if a.unsupported and sure[id(a)] >= lite.CONFIDENT]
        decided: dict[int, dict[str, object]] = {id(a): {"decided_by": "cef-lite"} for a in accused}
        asked = [(a, text) for a in accused if (text := context(a, source))]  # a sentence with no context stands
        shares = await asyncio.gather(*(self.backend.answer_share(messages(text, written(a.sentence)), "yes", "no")
                                        for a, text in asked))  # fmt: skip
        for (a, _), share in zip(asked, shares, strict=True):
            if share is None:  # the model answered neither: the CPU judge's finding stands
                continue
            overruled = share >= self.same
            decided[id(a)] = {"decided_by": "judge model" if overruled else "cef-lite and judge model",
                              "same_facts": round(share, 2), "overruled": overruled}  # fmt: skip
        source_questions, candidate_questions = lite.questions_of(source, alignments, sure, decided)
        found = cef.scores(task, source_questions, candidate_questions, lite.CONFIDENT)
        return cef.results(sample, self.method, task, found, time.perf_counter() - started)
