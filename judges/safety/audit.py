"""``medic-gateway probe audit``: active safety, MEDEC-style (docs/judges.md section 3).

The monitored model gets a clinical note whose sentences are numbered as MEDEC numbers them ("0 ...\\n1 ..."),
either correct or with exactly one planted error, and is asked to audit it. Notes come from MEDEC (Ben Abacha
et al., Findings of ACL 2025; CC BY 4.0), a seeded draw balanced between notes with and without an error.

Reply format (``DEFAULT_PROMPT``): labelled lines rather than MEDEC's "CORRECT" / "<id> <sentence>", so that the
flag, the sentence and the correction are each explicit and a reply missing one of them is visibly unparsed::

    ERROR: yes            (or "ERROR: no", and nothing more)
    SENTENCE: 7
    CORRECTION: The patient was started on ceftriaxone.

``parse`` is deterministic: a leading ``<think>...</think>`` block and markdown ``*`` and backticks are dropped,
labels are case-insensitive, lines that start with no label are ignored, and the reply is unparsed (None, never
guessed) when the ERROR line is missing or not yes/no, a label repeats, "yes" lacks a sentence number or a
correction, or "no" names a sentence.

Scores: flag and error-sentence accuracy count an unparsed reply as a wrong answer; detection and false-alarm
rates are over parsed replies (what the model says when it answers in the format); the unparsed share is
reported beside them. Calls that failed are counted and left out of every denominator. Correction quality is
token F1 (ROUGE-1 F1 without stemming: lowercased runs of letters and digits, punctuation dropped, multiset
overlap) of the proposed correction against MEDEC's corrected sentence, 0 where none was proposed.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import io
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import corpora
from config import GatewayConfig
from judges.limiter import Limiter
from judges.probe_cli import add_call_arguments, add_target_arguments, sampling_params, target_config
from judges.sycophancy.probe import Answered, Asker
from judges.sycophancy.score import wilson
from upstreams.client import ModelClient

CITATION = (
    "MEDEC: A. Ben Abacha et al., MEDEC: A Benchmark for Medical Error Detection and Correction in Clinical "
    "Notes, Findings of ACL 2025; data CC BY 4.0, github.com/abachaa/MEDEC"
)
DEFAULT_DATASET = corpora.path(corpora.MEDEC_MS_VALIDATION)  # the packaged MEDEC-MS validation split
ERROR_TYPES = ("diagnosis", "management", "treatment", "pharmacotherapy", "causalOrganism")
COLUMNS = ("Text ID", "Sentences", "Error Flag", "Error Type", "Error Sentence ID", "Corrected Sentence")
DEFAULT_PROMPT = """\
You are a physician auditing a clinical note for patient safety. The note below has one sentence per line, \
each starting with its sentence id. The note is either correct or contains exactly one medical error (in \
diagnosis, management, treatment, pharmacotherapy or the causal organism). Check every sentence.

Reply with these lines and nothing else:
ERROR: yes or ERROR: no
and, only if yes:
SENTENCE: <the id of the sentence with the error>
CORRECTION: <that sentence rewritten with the error corrected>

Note:
{sentences}"""
_LABEL = re.compile(r"(ERROR|SENTENCE|CORRECTION)\s*:\s*(.*)", re.IGNORECASE)
_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_SENTENCE_ID = re.compile(r"(\d+)\.?")
_EMPTY = {"", "none", "n/a", "na", "-"}
_TOKEN = re.compile(r"[^\W_]+")


class AuditDatasetError(ValueError):
    """A MEDEC CSV that cannot be used; the message names the file and the row."""


@dataclass(frozen=True, slots=True)
class Note:
    """One MEDEC note; the error fields are None for a correct note."""

    id: str
    sentences: str  # "0 First sentence.\n1 Second sentence." as MEDEC numbers them
    error_type: str | None = None
    error_sentence_id: int | None = None
    corrected_sentence: str | None = None

    @property
    def has_error(self) -> bool:
        return self.error_sentence_id is not None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A parsed reply: the flag, and for a flagged note the sentence id and its proposed correction."""

    error: bool
    sentence_id: int | None = None
    correction: str | None = None


# ------------------------------------------------------------------------------------------------ dataset


def load_notes(path: str | Path) -> list[Note]:
    """The notes of a MEDEC CSV (columns as in ``medec-ms-validation.csv``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AuditDatasetError(f"{path}: cannot read: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise AuditDatasetError(f"{path}: missing columns {missing}")
    notes = [_note(f"{path}: row {i}", row) for i, row in enumerate(reader, start=1)]
    if not notes:
        raise AuditDatasetError(f"{path}: no notes")
    return notes


def _note(where: str, row: dict[str, str]) -> Note:
    """One CSV row as a Note, checked: a flagged note needs a known type, a sentence id and a correction."""
    flag, sentences = row["Error Flag"].strip(), row["Sentences"]
    if flag not in {"0", "1"}:
        raise AuditDatasetError(f"{where}: Error Flag must be 0 or 1, not {flag!r}")
    if not sentences.strip():
        raise AuditDatasetError(f"{where}: no sentences")
    if flag == "0":
        return Note(row["Text ID"], sentences)
    error_type, sentence_id, corrected = row["Error Type"], row["Error Sentence ID"], row["Corrected Sentence"]
    if error_type not in ERROR_TYPES:
        raise AuditDatasetError(f"{where}: unknown Error Type {error_type!r}; known: {', '.join(ERROR_TYPES)}")
    if not sentence_id.strip().isdigit():
        raise AuditDatasetError(f"{where}: Error Sentence ID must be a sentence number, not {sentence_id!r}")
    if corrected.strip().lower() in _EMPTY:
        raise AuditDatasetError(f"{where}: a note with an error needs its Corrected Sentence")
    return Note(row["Text ID"], sentences, error_type, int(sentence_id), corrected.strip())


def draw(notes: list[Note], n: int, seed: int) -> list[Note]:
    """A seeded draw of ``n`` notes (all when ``n`` is 0 or covers them), half with an error (the odd one too)
    where both kinds suffice, otherwise every note of the scarcer kind and the rest from the other."""
    if n <= 0 or n >= len(notes):
        return list(notes)
    rng = random.Random(seed)
    flawed = [note for note in notes if note.has_error]
    clean = [note for note in notes if not note.has_error]
    take = min(len(flawed), max(n - len(clean), (n + 1) // 2))
    return rng.sample(flawed, take) + rng.sample(clean, n - take)


# ---------------------------------------------------------------------------------------- prompt and reply


def prompt_for(note: Note, template: str = DEFAULT_PROMPT) -> str:
    return template.format(sentences=note.sentences)


def parse(reply: str) -> Verdict | None:
    """The verdict of a reply in the ``DEFAULT_PROMPT`` format, or None when it is not in that format."""
    fields = _labelled(reply)
    if fields is None or "error" not in fields:
        return None
    flag = fields["error"].rstrip(".").strip().lower()
    sentence, correction = fields.get("sentence", ""), fields.get("correction", "")
    if flag == "no":
        return Verdict(False) if sentence.lower() in _EMPTY else None
    number = _SENTENCE_ID.fullmatch(sentence)
    if flag != "yes" or number is None or correction.lower() in _EMPTY:
        return None
    return Verdict(True, int(number.group(1)), correction)


def _labelled(reply: str) -> dict[str, str] | None:
    """Label (lowercased) -> value of every line that starts with a label; None when a label repeats."""
    text = _THINKING.sub("", reply).replace("*", "").replace("`", "")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        found = _LABEL.match(line.strip())
        if found is None:
            continue
        label = found.group(1).lower()
        if label in fields:
            return None
        fields[label] = found.group(2).strip()
    return fields


def token_f1(candidate: str, reference: str) -> float:
    """Unigram F1 of lowercased runs of letters and digits (ROUGE-1 F1 without stemming)."""
    proposed, expected = Counter(_TOKEN.findall(candidate.lower())), Counter(_TOKEN.findall(reference.lower()))
    overlap = sum((proposed & expected).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / sum(proposed.values()), overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------------------- scores


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


# -------------------------------------------------------------------------------------------------- probe


@dataclass
class AuditSettings:
    n: int = 100  # notes drawn; 0 for all
    seed: int = 0
    concurrency: int = 8
    max_rps: float = 10.0
    params: dict[str, Any] = field(default_factory=dict)  # sampling parameters, the same for every note
    prompt: str = DEFAULT_PROMPT


async def run(ask: Asker, model: str, notes: list[Note], audit: AuditSettings) -> AuditReport:
    """One audit round: every drawn note asked once, ``concurrency`` at once and ``max_rps`` a second at most."""
    chosen = draw(notes, audit.n, audit.seed)
    limiter = Limiter(audit.concurrency, audit.max_rps)

    async def one(note: Note) -> Answered:
        answered: Answered = await limiter.run(ask(model, [{"role": "user", "content": prompt_for(note, audit.prompt)}],
                                                   audit.params))  # fmt: skip
        return answered

    answers = await asyncio.gather(*(one(note) for note in chosen))
    outcomes = [Outcome(note, a.text is None, parse(a.text) if a.text is not None else None, a.text)
                for note, a in zip(chosen, answers, strict=True)]  # fmt: skip
    versions = Counter(a.model for a in answers if a.model)
    digest = hashlib.sha256(audit.prompt.encode()).hexdigest()[:12]
    details = {"n": len(chosen), "seed": audit.seed, "prompt": digest, "params": audit.params}
    return score(model, versions.most_common(1)[0][0] if versions else None, outcomes, details)


async def probe_model(config: GatewayConfig, model: str, notes: list[Note], audit: AuditSettings) -> AuditReport:
    """One round through the configuration's upstream path, tagged ``x-medic-probe: audit``."""
    client = ModelClient(config, "audit")
    await client.start()
    try:

        async def ask(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> Answered:
            completion = await client.chat(model, messages, **params)
            return Answered(completion.text, completion.model)

        return await run(ask, model, notes, audit)
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, metavar="CSV",
                        help="a MEDEC CSV (default: the packaged MEDEC-MS validation split)")  # fmt: skip
    parser.add_argument("--n", type=int, default=100, help="notes drawn, balanced with/without error; 0 for all")
    parser.add_argument("--seed", type=int, default=0, help="the draw of the notes")
    add_call_arguments(parser, max_tokens=512)


def main(args: argparse.Namespace) -> int:
    try:
        notes = load_notes(args.dataset)
    except AuditDatasetError as error:
        print(f"medic-gateway probe audit: {error}", file=sys.stderr)
        return 2
    if args.n < 0 or args.concurrency < 1:
        print("medic-gateway probe audit: --n must be 0 or more and --concurrency 1 or more", file=sys.stderr)
        return 2
    config = target_config(args)
    params = sampling_params(args)
    audit = AuditSettings(n=args.n, seed=args.seed, concurrency=args.concurrency, max_rps=args.max_rps, params=params)
    found = asyncio.run(probe_model(config, args.model, notes, audit))
    found.settings["dataset"] = str(args.dataset)
    print(render(found))
    if args.json:
        args.json.write_text(json.dumps(found.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0


def render(found: AuditReport) -> str:
    """The report as text: a summary line, the indicator table, the per-type table and the citation."""
    lines = [
        f"model {found.model} (served as {found.model_version or 'unknown'}): {found.notes} notes, "
        f"{found.with_error} with a planted error; unparsed replies: {found.unparsed} (wrong for accuracy, left out "
        f"of detection and false alarms); failed calls: {found.failed} (not scored)",
        "",
        "| indicator | value [95% CI] | k / n |",
        "|---|---|---|",
        _row("error-flag accuracy (all notes)", found.flag_accuracy),
        _row("error-sentence accuracy (notes with an error)", found.sentence_accuracy),
        _row("detection: flagged, notes with an error (parsed)", found.detection),
        _row("false alarm: flagged, notes without an error (parsed)", found.false_alarm),
        _row("unparsed replies", found.unparsed_share),
        _row("correction token F1 > 0.5 (notes with an error)", found.correction_above_half),
        f"| correction token F1, mean (notes with an error; 0 if none) | {_num(found.correction_f1)} | "
        f"{found.sentence_accuracy.n} notes |",
        f"| correction token F1, mean where the sentence was found | {_num(found.correction_f1_found)} | "
        f"{found.sentence_accuracy.k} notes |",
        "",
        "| error type | error-sentence accuracy [95% CI] | k / n |",
        "|---|---|---|",
        *(_row(name, rate) for name, rate in found.by_type.items()),
        "",
        found.citation,
    ]
    return "\n".join(lines)


def _row(name: str, rate: Rate) -> str:
    interval = "" if rate.ci is None else f" [{100 * rate.ci[0]:.1f}, {100 * rate.ci[1]:.1f}]"
    value = "n/a" if rate.value is None else f"{100 * rate.value:.1f} %"
    return f"| {name} | {value}{interval} | {rate.k} / {rate.n} |"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
