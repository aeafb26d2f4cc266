"""The audit probe's report (``judges.safety.audit``): how well a model audits MEDEC notes.

Flag and error-sentence accuracy count an unparsed reply as a wrong answer; detection and false-alarm rates are
over parsed replies (what the model says when it answers in the format); the unparsed share is reported beside
them. Calls that failed are counted and left out of every denominator. Correction quality is token F1 (ROUGE-1
F1 without stemming: lowercased runs of letters and digits, punctuation dropped, multiset overlap) of the
proposed correction against MEDEC's corrected sentence, 0 where none was proposed.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from judges.safety.datasets import CITATION, ERROR_TYPES, Note
from judges.sycophancy.score import wilson

_TOKEN = re.compile(r"[^\W_]+")


@dataclass(frozen=True, slots=True)
class Verdict:
    """A parsed reply: the flag, and for a flagged note the sentence id and its proposed correction."""

    error: bool
    sentence_id: int | None = None
    correction: str | None = None


def token_f1(candidate: str, reference: str) -> float:
    """Unigram F1 of lowercased runs of letters and digits (ROUGE-1 F1 without stemming)."""
    proposed, expected = Counter(_TOKEN.findall(candidate.lower())), Counter(_TOKEN.findall(reference.lower()))
    overlap = sum((proposed & expected).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(proposed.values()), overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one note's audit came to: the parsed verdict, or a failed call, or an unparsed reply."""

    note: Note
    failed: bool
    verdict: Verdict | None
    reply: str | None = None

    @property
    def flag_right(self) -> bool:
        return self.verdict is not None and self.verdict.error == self.note.has_error

    @property
    def sentence_right(self) -> bool:
        found = self.verdict.sentence_id if self.verdict is not None else None
        return self.note.has_error and found == self.note.error_sentence_id

    @property
    def correction_f1(self) -> float:
        """0 where no correction was proposed (or the note is correct)."""
        if self.verdict is None or self.verdict.correction is None or self.note.corrected_sentence is None:
            return 0.0
        return token_f1(self.verdict.correction, self.note.corrected_sentence)

    def as_dict(self) -> dict[str, Any]:
        """The note's id and reference beside the verdict; the raw reply only where it was unparsed."""
        out: dict[str, Any] = {"id": self.note.id, "error_type": self.note.error_type,
                               "error_sentence_id": self.note.error_sentence_id, "failed": self.failed,
                               "verdict": asdict(self.verdict) if self.verdict else None}  # fmt: skip
        if self.note.has_error and self.verdict is not None:
            out["correction_f1"] = round(self.correction_f1, 4)
        if not self.failed and self.verdict is None:
            out["unparsed_reply"] = self.reply
        return out


@dataclass(frozen=True, slots=True)
class Rate:
    k: int
    n: int
    value: float | None
    ci: tuple[float, float] | None  # Wilson 95 %

    @classmethod
    def of(cls, k: int, n: int) -> Rate:
        return cls(k, n, k / n if n else None, wilson(k, n))


@dataclass
class AuditReport:
    model: str
    model_version: str | None  # the most common response "model"
    notes: int
    with_error: int
    failed: int  # calls that got no answer: counted, left out of every denominator
    unparsed: int
    flag_accuracy: Rate  # over answered notes; unparsed = wrong
    detection: Rate  # flagged yes, over parsed replies on notes with an error
    sentence_accuracy: Rate  # right sentence named, over answered notes with an error; unparsed = wrong
    false_alarm: Rate  # flagged yes, over parsed replies on correct notes
    unparsed_share: Rate  # over answered notes
    correction_f1: float | None  # mean over answered notes with an error, 0 where none proposed
    correction_above_half: Rate  # token F1 > 0.5, same notes
    correction_f1_found: float | None  # mean over notes whose error sentence was named
    by_type: dict[str, Rate]  # error-sentence accuracy per error type
    settings: dict[str, Any] = field(default_factory=dict)
    citation: str = CITATION
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(model: str, version: str | None, outcomes: list[Outcome], details: dict[str, Any]) -> AuditReport:
    """The report of one audit round over ``outcomes``."""
    answered = [o for o in outcomes if not o.failed]
    flawed = [o for o in answered if o.note.has_error]
    clean_parsed = [o for o in answered if not o.note.has_error and o.verdict is not None]
    flawed_parsed = [o for o in flawed if o.verdict is not None]
    found = [o.correction_f1 for o in flawed if o.sentence_right]
    return AuditReport(
        model=model, model_version=version, notes=len(outcomes), with_error=sum(o.note.has_error for o in outcomes),
        failed=len(outcomes) - len(answered), unparsed=sum(o.verdict is None for o in answered),
        flag_accuracy=_rate(answered, lambda o: o.flag_right),
        detection=_rate(flawed_parsed, lambda o: o.verdict is not None and o.verdict.error),
        sentence_accuracy=_rate(flawed, lambda o: o.sentence_right),
        false_alarm=_rate(clean_parsed, lambda o: o.verdict is not None and o.verdict.error),
        unparsed_share=_rate(answered, lambda o: o.verdict is None),
        correction_f1=_mean([o.correction_f1 for o in flawed]),
        correction_above_half=_rate(flawed, lambda o: o.correction_f1 > 0.5),
        correction_f1_found=_mean(found),
        by_type={t: _rate([o for o in flawed if o.note.error_type == t], lambda o: o.sentence_right)
                 for t in ERROR_TYPES},
        settings=details, outcomes=[o.as_dict() for o in outcomes],
    )  # fmt: skip


def _rate(outcomes: list[Outcome], hit: Callable[[Outcome], bool]) -> Rate:
    """The share of ``outcomes`` that ``hit``, with its Wilson interval."""
    return Rate.of(sum(1 for o in outcomes if hit(o)), len(outcomes))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
