"""The LLM fidelity judges: the Cross-Examination Framework asked of a judge model (docs/judges.md section 1).

``cef-llm``: the judge writes N closed questions from the source S and N from the candidate C (each answered
YES by its own text), then answers every question separately on S and on C with YES, NO or IDK:
2 + 4N calls per sample (N = 5 for short texts, 10 for long ones), all in flight at once. ``cef-llm-batch``
answers all the questions about one text in one call: 6 calls per sample. It is a different method and a
different series; calibrate it against ``cef-llm`` before relying on it.

Every prompt puts the fixed instructions first and the document second (the question, when there is one,
last), so that a vLLM server's automatic prefix caching reuses the document across the questions. Replies are
constrained by a JSON schema and parsed strictly: an answer outside YES/NO/IDK, a wrong number of questions
or answers, or anything that is not the schema's JSON is retried, then fails the sample (the worker retries
it and dead-letters it if it keeps failing). The method records the judge model and a hash of the prompts:
``cef-llm/<model>/<hash>``.

Judge stability: with second judges configured, a share of samples is also answered by them, on the primary
judge's questions; the disagreement rate and the primary's deviation from the majority become results.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from typing import Any

import orjson

from judges.backends import JudgeBackend, JudgeOutputError
from judges.fidelity import cef
from judges.fidelity.cef import ANSWERS, Answer, Question
from judges.fidelity.task import Task, applicable, classify
from pipeline.sample import Result, Sample

GENERATE = (
    "You write closed yes/no questions that check the facts of a clinical text. Read the text below and write "
    "exactly {n} questions. Each question must be answerable from the text alone and the text must answer it "
    "YES. Ask about the clinically important facts first: diagnoses, drugs with their doses, routes and "
    "frequencies, results and numbers, findings that are absent, sides, dates, organisms, procedures and "
    "plans. One fact per question; name the fact in the question, do not refer to 'the text'. "
    'Reply with JSON only: {{"questions": ["...", ...]}}.'
)
ANSWER = (
    "You answer one closed question about a clinical text using only that text. Answer YES if the text states "
    "or directly implies it, NO if the text contradicts it, IDK if the text does not say. Do not use outside "
    'knowledge. Reply with JSON only: {"answer": "YES" | "NO" | "IDK"}.'
)
ANSWER_ALL = (
    "You answer numbered closed questions about a clinical text using only that text. For each question answer "
    "YES if the text states or directly implies it, NO if the text contradicts it, IDK if the text does not "
    'say. Do not use outside knowledge. Reply with JSON only: {"answers": ["YES" | "NO" | "IDK", ...]}, one '
    "answer per question, in order."
)
SHORT_QUESTIONS = 5
LONG_QUESTIONS = 10
LONG_WORDS = 400  # a text this long or longer gets LONG_QUESTIONS questions
PARSE_ATTEMPTS = 2  # a reply that does not parse is asked again once
# A closed question starts with an auxiliary verb and asks one thing; "What is the patient's history?" is not
# one, whatever a small judge model answers to it.
AUXILIARIES = frozenset({
    "is", "are", "was", "were", "does", "do", "did", "has", "have", "had",
    "can", "could", "will", "would", "should", "shall", "may", "might", "must",
})  # fmt: skip
OPEN_WORDS = frozenset({"what", "which", "how", "why", "when", "where", "who", "whom", "whose"})


def questions_schema(n: int) -> dict[str, Any]:
    items = {"type": "string", "minLength": 3}
    return {"type": "object", "additionalProperties": False, "required": ["questions"],
            "properties": {"questions": {"type": "array", "items": items, "minItems": n, "maxItems": n}}}  # fmt: skip


ANSWER_SCHEMA: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["answer"],
                                 "properties": {"answer": {"type": "string", "enum": list(ANSWERS)}}}  # fmt: skip


def answers_schema(n: int) -> dict[str, Any]:
    items = {"type": "string", "enum": list(ANSWERS)}
    return {"type": "object", "additionalProperties": False, "required": ["answers"],
            "properties": {"answers": {"type": "array", "items": items, "minItems": n, "maxItems": n}}}  # fmt: skip


def prompt_hash(batched: bool) -> str:
    """A short hash of everything that shapes the judge's answers: prompts, schemas and question counts."""
    parts = [GENERATE, ANSWER_ALL if batched else ANSWER, str(SHORT_QUESTIONS), str(LONG_QUESTIONS),
             str(LONG_WORDS), orjson.dumps(ANSWER_SCHEMA).decode()]  # fmt: skip
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def question_count(text: str) -> int:
    return LONG_QUESTIONS if len(text.split()) >= LONG_WORDS else SHORT_QUESTIONS


def document(text: str) -> str:
    return f"TEXT:\n{text}"


class Examiner:
    """The calls of the framework against one judge backend, with strict parsing."""

    def __init__(self, backend: JudgeBackend, batched: bool) -> None:
        self.backend = backend
        self.batched = batched

    async def generate(self, text: str) -> list[str]:
        """The closed questions the judge writes from ``text``; open ones are dropped, and a reply with fewer than
        half its questions closed is asked for again once."""
        n = question_count(text)
        messages = [{"role": "system", "content": GENERATE.format(n=n)}, {"role": "user", "content": document(text)}]
        kept: list[str] = []
        for _ in range(PARSE_ATTEMPTS):
            reply = await self._call(messages, "cef_questions", questions_schema(n), "questions", n)
            kept = [q for q in (str(item).strip() for item in reply) if closed(q)]
            if 2 * len(kept) >= n:
                break
        return kept

    async def answer(self, text: str, questions: list[str]) -> list[Answer]:
        """One answer per question, on ``text``: one call each, or one call for all when batched."""
        if not questions:
            return []
        if self.batched:
            numbered = "\n".join(f"{i + 1}. {q}" for i, q in enumerate(questions))
            messages = [{"role": "system", "content": ANSWER_ALL},
                        {"role": "user", "content": f"{document(text)}\n\nQUESTIONS:\n{numbered}"}]  # fmt: skip
            reply = await self._call(messages, "cef_answers", answers_schema(len(questions)), "answers", len(questions))
            return [_answer(a) for a in reply]
        return list(await asyncio.gather(*(self._answer_one(text, q) for q in questions)))

    async def _answer_one(self, text: str, question: str) -> Answer:
        messages = [{"role": "system", "content": ANSWER},
                    {"role": "user", "content": f"{document(text)}\n\nQUESTION: {question}"}]  # fmt: skip
        for attempt in range(PARSE_ATTEMPTS):
            try:
                reply = await self.backend.complete(messages, "cef_answer", ANSWER_SCHEMA)
                return _answer(_object(reply).get("answer"))
            except JudgeOutputError:
                if attempt == PARSE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _call(self, messages: list[dict[str, str]], name: str, schema: dict[str, Any], key: str,
                    n: int) -> list[Any]:  # fmt: skip
        """The list under ``key`` in the reply, of exactly ``n`` items; asked again once when it is not."""
        for attempt in range(PARSE_ATTEMPTS):
            try:
                reply = _object(await self.backend.complete(messages, name, schema)).get(key)
                if isinstance(reply, list) and len(reply) == n:
                    return reply
                raise JudgeOutputError(f"{name}: expected {n} items under {key!r}")
            except JudgeOutputError:
                if attempt == PARSE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")


def closed(question: str) -> bool:
    """A yes/no question: it starts with an auxiliary verb, names something (three words or more), ends with its
    only question mark, and tacks no wh-question on ("..., and why?")."""
    words = question.replace(",", " ").split()
    if len(words) < 3 or not question.endswith("?") or question.count("?") != 1:
        return False
    lowered = [w.lower().strip("?") for w in words]
    follows_joint = any(w in OPEN_WORDS and before in ("and", "or") for before, w in itertools.pairwise(lowered))
    return lowered[0] in AUXILIARIES and lowered[1] not in OPEN_WORDS and not follows_joint


def _object(reply: str) -> dict[str, Any]:
    try:
        value = orjson.loads(reply)
    except orjson.JSONDecodeError:
        raise JudgeOutputError("the judge's reply is not JSON") from None
    if not isinstance(value, dict):
        raise JudgeOutputError("the judge's reply is not a JSON object")
    return value


def _answer(value: Any) -> Answer:
    """Exactly YES, NO or IDK (surrounding spaces and case forgiven); anything else is an error, never NO."""
    text = value.strip().upper() if isinstance(value, str) else ""
    for answer in ANSWERS:
        if text == answer:
            return answer
    raise JudgeOutputError("an answer outside YES/NO/IDK")


class CefLlmJudge:
    """Judge "cef-llm" (or "cef-llm-batch"): the four fidelity results per sample, from a judge model."""

    batch_size: int = 8

    def __init__(self, backend: JudgeBackend, batched: bool = False, second: list[JudgeBackend] | None = None,
                 stability_share: float = 0.0) -> None:  # fmt: skip
        self.name = "cef-llm-batch" if batched else "cef-llm"
        self.batched = batched
        self.examiner = Examiner(backend, batched)
        self.second = [Examiner(b, batched) for b in second or []]
        self.stability_share = stability_share

    @property
    def method(self) -> str:
        """Names the judge model as served now (judges.backends: a new version starts a new series)."""
        return f"{self.name}/{self.examiner.backend.served}/{prompt_hash(self.batched)}"

    def applies(self, sample: Sample) -> bool:
        return applicable(sample)

    async def close(self) -> None:
        await asyncio.gather(*(e.backend.close() for e in [self.examiner, *self.second]))

    async def evaluate(self, samples: list[Sample]) -> list[list[Result]]:
        return list(await asyncio.gather(*(self.judge(sample) for sample in samples)))

    async def judge(self, sample: Sample) -> list[Result]:
        started = time.perf_counter()
        task = classify(sample) if applicable(sample) else None
        if task is None:
            return cef.results(sample, self.method, None, None, 0.0)
        source_questions, candidate_questions, texts = await self._examine(self.examiner, task)
        found = cef.scores(task, source_questions, candidate_questions)
        results = cef.results(sample, self.method, task, found, time.perf_counter() - started)
        if self.second and _share(sample.request_id) < self.stability_share:
            results += await self._stability(sample, task, texts, source_questions, candidate_questions)
        return results

    async def _examine(self, examiner: Examiner, task: Task) -> tuple[list[Question], list[Question], list[str]]:
        qs, qc = await asyncio.gather(examiner.generate(task.source), examiner.generate(task.candidate))
        s_on_s, s_on_c, c_on_s, c_on_c = await asyncio.gather(
            examiner.answer(task.source, qs), examiner.answer(task.candidate, qs),
            examiner.answer(task.source, qc), examiner.answer(task.candidate, qc),
        )  # fmt: skip
        source_questions = [Question(q, a, b) for q, a, b in zip(qs, s_on_s, s_on_c, strict=True)]
        candidate_questions = [Question(q, a, b) for q, a, b in zip(qc, c_on_s, c_on_c, strict=True)]
        return source_questions, candidate_questions, [task.source, task.candidate]

    async def _stability(self, sample: Sample, task: Task, texts: list[str], source_questions: list[Question],
                         candidate_questions: list[Question]) -> list[Result]:  # fmt: skip
        """The second judges answer the primary's questions on both texts; see ``stability``."""
        asked = [(q.text, q.on_source, q.on_candidate) for q in source_questions + candidate_questions]
        own_text = ["source"] * len(source_questions) + ["candidate"] * len(candidate_questions)
        others = []
        for examiner in self.second:
            on_s, on_c = await asyncio.gather(examiner.answer(task.source, [q for q, _, _ in asked]),
                                              examiner.answer(task.candidate, [q for q, _, _ in asked]))  # fmt: skip
            others.append((examiner.backend.model, on_s, on_c))
        return stability(sample, self.method, asked, own_text, others)


def stability(sample: Sample, method: str, asked: list[tuple[str, Answer, Answer]], own_text: list[str],
              others: list[tuple[str, list[Answer], list[Answer]]]) -> list[Result]:  # fmt: skip
    """Two results from the answers of several judges to the primary judge's questions (judges.md 1.6):

    * ``judge_disagreement_rate``: of the other judges' answers to each question on the text it was written
      from (where the answer should be YES), the share that is not YES;
    * ``judge_majority_deviation``: how often the primary judge's answer differs from the majority answer of
      all judges, over every question on both texts; a tie has no majority and counts as a deviation.
    """
    not_yes = total = deviations = answers = 0
    for i, (_, primary_s, primary_c) in enumerate(asked):
        for _, on_s, on_c in others:
            own = on_s[i] if own_text[i] == "source" else on_c[i]
            not_yes += own != "YES"
            total += 1
        for primary, column in ((primary_s, 1), (primary_c, 2)):
            votes: list[Answer] = [primary, *(o[1][i] if column == 1 else o[2][i] for o in others)]
            deviations += primary != _majority(votes)
            answers += 1
    common: dict[str, Any] = {"request_id": sample.request_id, "traceparent": sample.traceparent, "method": method,
                              "model": sample.model, "tenant": sample.tenant}  # fmt: skip
    judges = [name for name, _, _ in others]
    return [
        Result(indicator="judge_disagreement_rate", score=not_yes / total if total else None, label="stability",
               evidence=[{"judges": judges, "answers": total, "not_yes": not_yes}], **common),
        Result(indicator="judge_majority_deviation", score=deviations / answers if answers else None,
               label="stability", evidence=[{"judges": judges, "answers": answers, "deviations": deviations}],
               **common),
    ]  # fmt: skip


def _majority(votes: list[Answer]) -> Answer | None:
    counts = sorted(((votes.count(a), a) for a in set(votes)), reverse=True)
    if len(counts) > 1 and counts[0][0] == counts[1][0]:
        return None
    return counts[0][1]


def _share(request_id: str) -> float:
    """A stable fraction in [0, 1) from the request id, so a retried sample gets the same decision."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") / 2**64
