#!/usr/bin/env python3
"""Validates the fidelity judges on MEDEC-MS: do they flag a rewritten note that carries one planted error?

Data: the MEDEC-MS validation split (Ben Abacha et al., "MEDEC: A Benchmark for Medical Error Detection and
Correction in Clinical Notes", Findings of ACL 2025; CC BY 4.0), corpora/medec/ (packaged). For each note with a
planted error (diagnosis, management, treatment, pharmacotherapy or causal organism):

- source S: the corrected note ("Corrected Text"), sent as the user's note to summarise;
- unfaithful candidate: the note with the error ("Text"), rewritten;
- faithful control: the corrected note, rewritten the same way.

The rewrite stops a judge from scoring string equality, and tells whether the judge can read a note written in
other words. Candidate and control of a note are always rewritten alike, so the planted error is all that tells
them apart. Several generators, reported separately (``--generator``, repeatable; all by default):

- ``project``: one deterministic plan per note (seeded by ``--seed`` and the Text ID) applies clinical
  abbreviations, drops one or two sentences (never the error sentence, never below three sentences), swaps
  adjacent sentences (the first stays first) and merges adjacent sentences. Written by the judge's author.
- ``clinical-rewording`` and ``plain-words``: bench/rewrites/independent.py, rules written separately from the
  judge's tables (another clinician's wording; the note restated for a lay reader).
- ``local-model``: every sentence paraphrased by a local language model (bench/paraphrase_medec.py), kept only
  where every number, negation, side and drug name survived; read from the committed cache
  bench/data/medec-paraphrases.jsonl, so only the notes the cache covers are used.

Halves: ``corpora.half`` splits MEDEC by Text ID into a tuning half and a held-out half. The judge's thresholds
were tuned on the tuning half only; the figures in docs/judges.md are on the held-out half (``--half``, default
held-out).

Detection rule, fixed before any run: a pair is flagged when conformity < THRESHOLD or consistency < THRESHOLD
(THRESHOLD = 1.0: any contradicted source fact or any unsupported candidate claim the judge is confident of); a
null score never flags. Detection rate = flagged candidates / pairs; false-positive rate = flagged controls /
pairs. The curve: the same rates when a sample is flagged by any finding (confident or not) whose confidence is
at least t, for t over [0, 1] (an LLM judge's findings have confidence 1).

    .venv/bin/python bench/validate_fidelity.py [--method cef-lite ...] [--config FILE] [--half held-out]
        [--generator NAME ...] [--limit N] [--seed 0] [--threshold 1.0] [--show-misses N] [--examples N]
        [--dump FILE] [--json FILE]

A judge model behind an endpoint (cef-llm on vLLM) is named in the judging section of ``--config``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import functools
import json
import math
import random
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench.rewrites and bench.paraphrase_medec import from the repository's root
    sys.path.insert(0, str(ROOT))

import corpora  # noqa: E402
from config import ConfigError, GatewayConfig, load_config  # noqa: E402
from judges import registry  # noqa: E402
from judges.fidelity.lite import CONFIDENT  # noqa: E402
from judges.judge import Judge  # noqa: E402
from judges.progress import Progress  # noqa: E402
from pipeline.sample import Choice, Response, Result, Sample  # noqa: E402

THRESHOLD = 1.0
CITATION = (
    "MEDEC-MS validation split (Ben Abacha et al., MEDEC: A Benchmark for Medical Error Detection and "
    "Correction in Clinical Notes, Findings of ACL 2025; CC BY 4.0)"
)
DATA = corpora.path(corpora.MEDEC_MS_VALIDATION)
PROMPT = "Summarise the following note for the handover.\n\nNote:\n"
TYPES = ("diagnosis", "management", "treatment", "pharmacotherapy", "causalOrganism")
INDICATORS = ("fidelity_coverage", "fidelity_conformity", "fidelity_consistency")
FLAGGING = ("fidelity_conformity", "fidelity_consistency")
ABBREVIATION_SHARE = 0.75  # each table entry is used for a note with this probability
MIN_SENTENCES = 3
JOINERS = (", and ", "; ")
Z95 = 1.959964
MAX_EVIDENCE_SHOWN = 8
GENERATORS = ("project", "clinical-rewording", "plain-words", "local-model")
CURVE = tuple(round(0.1 * i, 1) for i in range(11))
SAME_CURVE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

# Long form (a regular expression, matched case-insensitively on word boundaries) -> what clinicians write.
# Order matters: a longer form comes before any shorter form it contains.
TABLE = (
    (r"patients", "pts"),
    (r"patient", "pt"),
    (r"(?<=\w)[- ]years?[- ]old", " yo"),
    (r"history of", "h/o"),
    (r"history", "hx"),
    (r"complain(?:s|ed|ing) of", "c/o"),
    (r"emergency department", "ED"),
    (r"blood pressure", "BP"),
    (r"heart rate", "HR"),
    (r"respiratory rate", "RR"),
    (r"shortness of breath", "SOB"),
    (r"chest pain", "CP"),
    (r"hypertension", "HTN"),
    (r"diabetes mellitus", "DM"),
    (r"without", "w/o"),
    (r"with", "w/"),
    (r"status post", "s/p"),
    (r"bilateral(?:ly)?", "b/l"),
    (r"diagnosis", "dx"),
    (r"treatment", "tx"),
    (r"symptoms", "sx"),
    (r"temperature", "temp"),
    (r"intravenous(?:ly)?", "IV"),
    (r"twice (?:a day|daily)", "BID"),
    (r"three times (?:a day|daily)", "TID"),
    (r"milligrams", "mg"),
    (r"electrocardiogra(?:m|phy)", "ECG"),
    (r"computed tomography", "CT"),
    (r"magnetic resonance imaging", "MRI"),
    (r"myocardial infarction", "MI"),
    (r"examination", "exam"),
    (r"laboratory", "lab"),
)
ABBREVIATIONS = tuple((re.compile(rf"\b(?:{long})\b", re.IGNORECASE), short) for long, short in TABLE)

# A sentence ends at . ! or ? (maybe followed by a closing quote or bracket) before a capital or a digit, except
# after titles, "vs.", "e.g.", "i.e." and single initials.
BOUNDARY = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))"
    r"(?<!\b[DM]r\.)(?<!\bMs\.)(?<!\bMrs\.)(?<!\bSt\.)(?<!\bvs\.)(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\b[A-Z]\.)"
    r"\s+(?=[\"'(\[]?[A-Z0-9])"
)
WORD = re.compile(r"[A-Za-z]+")
INSIDE = re.compile(r"[a-z,;] ([A-Z][a-z]+)\b")  # a capitalised word inside a sentence


@dataclass(frozen=True, slots=True)
class Unit:
    """One sentence of a note, or one line of a list (lab values) that keeps a line of its own."""

    text: str
    line: bool


@dataclass(frozen=True, slots=True)
class Note:
    """A MEDEC note with a planted error, split into units; the two versions differ only at ``error_index``."""

    text_id: str
    error_type: str
    source: str  # the corrected note as in the data
    text: str  # the note with its error as in the data
    erroneous: tuple[Unit, ...]
    corrected: tuple[Unit, ...]
    error_index: int
    located: bool  # the error unit holds MEDEC's "Error Sentence" and the corrected one its "Corrected Sentence"


@dataclass(frozen=True, slots=True)
class Plan:
    """The random choices of one note's rewrite, shared by its candidate and its control."""

    abbreviations: tuple[int, ...]  # indexes into ABBREVIATIONS
    dropped: tuple[int, ...]  # unit indexes
    order: tuple[int, ...]  # the unit indexes kept, after the swaps
    swaps: int
    merges: tuple[tuple[int, str], ...]  # (position p in order, joiner): units p and p + 1 become one sentence


@dataclass(frozen=True, slots=True)
class Piece:
    """A unit on its way to the rewritten text; ``error`` is where the error sentence lies in ``text``."""

    text: str
    line: bool
    error: tuple[int, int] | None


@dataclass(frozen=True, slots=True)
class Pair:
    """The rewritten candidate (with the error) and control (corrected) of one note."""

    note: Note
    plan: Plan
    candidate: str
    control: str
    abbreviated: tuple[int, ...]  # the ABBREVIATIONS entry of each replacement made in the candidate
    isolated: bool  # candidate and control differ, and only inside the error sentence


@dataclass(frozen=True, slots=True)
class Case:
    """What one generator made of one note: the candidate (with the error) and the control (corrected)."""

    generator: str
    note: Note
    candidate: str
    control: str


@dataclass(frozen=True, slots=True)
class Scored:
    """A judge's three scores for one sample and the evidence behind them."""

    scores: dict[str, float | None]
    evidence: dict[str, list[Any]]

    def flagged(self, threshold: float) -> bool:
        """The detection rule: conformity or consistency below the threshold; a null score never flags."""
        values = (self.scores.get(name) for name in FLAGGING)
        return any(value is not None and value < threshold for value in values)

    @property
    def level(self) -> float:
        """The highest confidence of any contradicted or unsupported finding (0 when there is none)."""
        found = [item for name in FLAGGING for item in self.evidence.get(name, []) if isinstance(item, dict)]
        return max((float(item.get("confidence", 1.0)) for item in found), default=0.0)

    @property
    def doubt(self) -> float | None:
        """cef-cascade: the lowest P(same facts) the judge model gave any of cef-lite's confident findings (-1 for
        one it was not asked about); None when the judge model answered nothing (another method)."""
        found = [item for name in FLAGGING for item in self.evidence.get(name, []) if isinstance(item, dict)]
        confident = [i for i in found if float(i.get("confidence", 1.0)) >= CONFIDENT]
        if not any("same_facts" in i for i in found):
            return -1.0 if confident else None
        return min((float(i.get("same_facts", -1.0)) for i in confident), default=None)


@dataclass(frozen=True, slots=True)
class Judged:
    case: Case
    candidate: Scored
    control: Scored


@dataclass(frozen=True, slots=True)
class Row:
    """One line of a method's table: an error type, or the total."""

    label: str
    pairs: int
    detected: int
    false_positives: int
    candidate_means: tuple[float | None, ...]  # coverage, conformity, consistency (non-null scores only)
    control_means: tuple[float | None, ...]
    samples_per_s: float


def split(text: str) -> list[Unit]:
    """The units of a MEDEC text: prose lines cut into sentences; list lines (no final punctuation) whole."""
    units: list[Unit] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        if line.rstrip("\"')]")[-1:] in (".", "!", "?", ":"):
            units.extend(Unit(sentence, line=False) for sentence in BOUNDARY.split(line) if sentence)
        else:
            units.append(Unit(line, line=True))
    return units


def note(row: dict[str, str]) -> Note | None:
    """The note of a row with a planted error; None when its two texts do not differ."""
    erroneous, corrected = split(row["Text"]), split(row["Corrected Text"])
    first, second = [u.text for u in erroneous], [u.text for u in corrected]
    head = _prefix(first, second)
    tail = _prefix(first[head:][::-1], second[head:][::-1])
    wrong, right = erroneous[head : len(erroneous) - tail], corrected[head : len(corrected) - tail]
    if not wrong or not right:
        return None
    error, fix = _joined(wrong), _joined(right)
    return Note(
        text_id=row["Text ID"],
        error_type=row["Error Type"],
        source=row["Corrected Text"].strip(),
        text=row["Text"].strip(),
        erroneous=(*erroneous[:head], error, *erroneous[len(erroneous) - tail :]),
        corrected=(*corrected[:head], fix, *corrected[len(corrected) - tail :]),
        error_index=head,
        located=_overlaps(row["Error Sentence"], error.text) and _overlaps(row["Corrected Sentence"], fix.text),
    )


def _prefix(first: Sequence[object], second: Sequence[object]) -> int:
    """How many leading items (units' texts, characters) the two sequences share."""
    count = 0
    while count < min(len(first), len(second)) and first[count] == second[count]:
        count += 1
    return count


def _joined(units: Sequence[Unit]) -> Unit:
    """The units that hold the error, as one (several when MEDEC's sentence spans more than one of ours)."""
    return units[0] if len(units) == 1 else Unit(" ".join(u.text for u in units), line=False)


def _overlaps(sentence: str, unit: str) -> bool:
    sentence = " ".join(sentence.split())
    return bool(sentence) and (sentence in unit or unit in sentence)


def load_notes(path: Path) -> tuple[list[Note], int, frozenset[str]]:
    """The notes with a planted error, how many could not be used, and the names in MEDEC (``vocabulary``)."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    notes = [note(row) for row in rows if row["Error Flag"] == "1"]
    return [n for n in notes if n is not None], notes.count(None), vocabulary(rows)


def vocabulary(rows: Sequence[dict[str, str]]) -> frozenset[str]:
    """Names: words MEDEC capitalises inside a sentence and never writes in lower case ("Neisseria"). A sentence
    merged into the previous one keeps its first capital only for these, and for acronyms."""
    lower: set[str] = set()
    capitalised: set[str] = set()
    for text in (row["Text"] for row in rows):
        lower.update(w for w in WORD.findall(text) if w.islower())
        capitalised.update(m.group(1) for m in INSIDE.finditer(text))
    return frozenset(w for w in capitalised if w.lower() not in lower)


def movable(units: Sequence[Unit], index: int) -> bool:
    """A prose sentence that may be dropped, swapped or merged: not a list line, not a heading ending in ':' nor
    the unit after one, and with balanced quotation marks."""
    unit = units[index]
    after_heading = index > 0 and units[index - 1].text.endswith(":")
    return not unit.line and unit.text[-1] in ".!?" and unit.text.count('"') % 2 == 0 and not after_heading


def plan(note: Note, seed: int) -> Plan:
    """The note's rewrite: drawn from a generator seeded by ``seed`` and the Text ID alone."""
    rng = random.Random(f"{seed}:{note.text_id}")
    units = note.erroneous
    free = [movable(units, i) for i in range(len(units))]
    abbreviations = tuple(i for i in range(len(ABBREVIATIONS)) if rng.random() < ABBREVIATION_SHARE)
    droppable = [i for i in range(1, len(units)) if free[i] and i != note.error_index]
    count = min(rng.choice((1, 2)), len(droppable), max(0, len(units) - MIN_SENTENCES))
    dropped = sorted(rng.sample(droppable, count))
    order = [i for i in range(len(units)) if i not in dropped]
    swaps = _adjacent(rng, [p for p in range(1, len(order) - 1) if free[order[p]] and free[order[p + 1]]])
    for p in swaps:
        order[p], order[p + 1] = order[p + 1], order[p]
    merges = _adjacent(rng, [p for p in range(len(order) - 1) if free[order[p]] and free[order[p + 1]]])
    joined = tuple((p, rng.choice(JOINERS)) for p in merges)
    return Plan(abbreviations, tuple(dropped), tuple(order), len(swaps), joined)


def _adjacent(rng: random.Random, positions: list[int]) -> list[int]:
    """One or two positions p (each for the pair p, p + 1) drawn from ``positions``, no two sharing a unit."""
    wanted = rng.choice((1, 2))
    rng.shuffle(positions)
    chosen: list[int] = []
    for p in positions:
        if len(chosen) < wanted and all(abs(p - q) > 1 for q in chosen):
            chosen.append(p)
    return sorted(chosen)


def abbreviate(text: str, entries: Sequence[int]) -> tuple[str, list[int]]:
    """``text`` with the chosen ABBREVIATIONS applied, and the entry of each replacement made."""
    used: list[int] = []
    for index in entries:
        pattern, short = ABBREVIATIONS[index]
        text, count = pattern.subn(functools.partial(_cased, short), text)
        used += [index] * count
    return text, used


def _cased(short: str, match: re.Match[str]) -> str:
    """The abbreviation, with a capital when the long form had one and the abbreviation is lower case."""
    return short[:1].upper() + short[1:] if match.group(0)[:1].isupper() and short[:1].islower() else short


def rewrite(units: Sequence[Unit], error_index: int, plan: Plan, names: frozenset[str]) -> tuple[Piece, list[int]]:
    """The rewritten text as one piece (``error``: the error sentence's span), and the abbreviations applied."""
    pieces: list[Piece] = []
    used: list[int] = []
    for i in plan.order:
        text, found = abbreviate(units[i].text, plan.abbreviations)
        used += found
        pieces.append(Piece(text, units[i].line, (0, len(text)) if i == error_index else None))
    for position, joiner in reversed(plan.merges):
        pieces[position : position + 2] = [merge(pieces[position], pieces[position + 1], joiner, names)]
    return render(pieces), used


def merge(first: Piece, second: Piece, joiner: str, names: frozenset[str]) -> Piece:
    """One sentence from two: "A, and b" or "A; b" (b's capital dropped unless a name or an acronym)."""
    head = first.text[:-1] if first.text.endswith(".") else first.text
    word = WORD.match(second.text)
    tail = second.text
    if word is not None and _ordinary(word.group(0), names):
        tail = tail[:1].lower() + tail[1:]
    error = first.error and (first.error[0], min(first.error[1], len(head)))
    if second.error is not None:
        offset = len(head) + len(joiner)
        error = (second.error[0] + offset, second.error[1] + offset)
    return Piece(head + joiner + tail, line=False, error=error)


def _ordinary(word: str, names: frozenset[str]) -> bool:
    """A capitalised word that is not a name, an acronym ("ED", "HbA1c") or "I"."""
    return word not in names and word != "I" and (len(word) == 1 or word[1:].islower())


def render(pieces: Sequence[Piece]) -> Piece:
    """The pieces as one text (list lines and what follows a heading on lines of their own), error span kept."""
    text = ""
    error: tuple[int, int] | None = None
    for index, piece in enumerate(pieces):
        if index:
            previous = pieces[index - 1]
            text += "\n" if piece.line or previous.line or previous.text.endswith(":") else " "
        if piece.error is not None:
            error = (len(text) + piece.error[0], len(text) + piece.error[1])
        text += piece.text
    return Piece(text, line=False, error=error)


def pair(note: Note, seed: int, names: frozenset[str]) -> Pair:
    """The candidate and control of a note, rewritten by the note's one plan."""
    chosen = plan(note, seed)
    candidate, used = rewrite(note.erroneous, note.error_index, chosen, names)
    control, _ = rewrite(note.corrected, note.error_index, chosen, names)
    return Pair(note, chosen, candidate.text, control.text, tuple(used), _isolated(candidate, control))


def _isolated(first: Piece, second: Piece) -> bool:
    """The texts differ, and only inside their error spans."""
    a, b = first.text, second.text
    head = _prefix(a, b)
    tail = _prefix(a[head:][::-1], b[head:][::-1])
    spans = [(first.error or (0, 0), len(a) - tail), (second.error or (0, 0), len(b) - tail)]
    return a != b and all(span[0] <= head and end <= span[1] for span, end in spans)


def sample(case: Case, kind: str, text: str) -> Sample:
    """The exchange a judge sees: the source note in the user turn, ``text`` as the answer."""
    return Sample(
        request_id=f"{case.note.text_id}/{case.generator}/{kind}",
        model="medec",
        request={"messages": [{"role": "user", "content": PROMPT + case.note.source}]},
        response=Response(choices=[Choice(content=text)]),
    )


def scored(results: Sequence[Result]) -> Scored:
    """The scores (None for an indicator the judge did not return) and evidence of one sample's results."""
    found = {r.indicator: r for r in results if r.indicator in INDICATORS}
    scores = {i: found[i].score if i in found else None for i in INDICATORS}
    return Scored(scores, {i: found[i].evidence for i in found})


async def evaluate(judge: Judge, samples: Sequence[Sample], bar: Progress | None = None) -> tuple[list[Scored], float]:
    """The judge's scores for every sample, in batches of its batch size, and the seconds spent in evaluate."""
    out: list[Scored] = []
    seconds = 0.0
    for start in range(0, len(samples), judge.batch_size):
        batch = list(samples[start : start + judge.batch_size])
        started = time.perf_counter()
        results = await judge.evaluate(batch)
        seconds += time.perf_counter() - started
        out.extend(scored(r) for r in results)
        if bar is not None:
            bar.advance(len(batch))
    return out, seconds


def cases(generator: str, notes: Sequence[Note], pairs: Sequence[Pair], cache: dict[str, Any]) -> list[Case]:
    """The candidate and control of every note by one generator (local-model: the notes its cache covers)."""
    if generator == "project":
        return [Case(generator, p.note, p.candidate, p.control) for p in pairs]
    if generator == "local-model":
        return [Case(generator, n, *texts) for n in notes if (texts := _paraphrased(n, cache)) is not None]
    from bench.rewrites import independent

    rewrite = {"clinical-rewording": independent.clinical_rewording, "plain-words": independent.plain_words}[generator]
    return [Case(generator, n, rewrite(n.text, 0), rewrite(n.source, 0)) for n in notes]


def _paraphrased(note: Note, cache: dict[str, Any]) -> tuple[str, str] | None:
    """The note's two versions with the model's kept paraphrases, when the cache holds every sentence of both."""
    from bench import paraphrase_medec

    texts = (note.text, note.source)
    if any(len(set(paraphrase_medec.coverage(text, cache)[:2])) > 1 for text in texts):
        return None  # a sentence the cache has not been asked
    return paraphrase_medec.paraphrased(texts[0], cache), paraphrase_medec.paraphrased(texts[1], cache)


async def judge_cases(judge: Judge, found: Sequence[Case]) -> tuple[list[Judged], dict[tuple[str, str], float]]:
    """Every case judged, one generator and error type at a time, and the seconds each group took."""
    judged: list[Judged] = []
    seconds: dict[tuple[str, str], float] = {}
    bar = Progress(f"{judge.name} on MEDEC", 2 * len(found), "sample")
    for generator in dict.fromkeys(c.generator for c in found):
        for error_type in error_types([c.note for c in found if c.generator == generator]):
            group = [c for c in found if c.generator == generator and c.note.error_type == error_type]
            samples = [sample(c, "candidate", c.candidate) for c in group]
            samples += [sample(c, "control", c.control) for c in group]
            results, seconds[generator, error_type] = await evaluate(judge, samples, bar)
            judged += [Judged(*j) for j in zip(group, results[: len(group)], results[len(group) :], strict=True)]
    bar.close()
    return judged, seconds


def error_types(notes: Sequence[Note]) -> list[str]:
    present = {n.error_type for n in notes}
    return [t for t in TYPES if t in present] + sorted(present - set(TYPES))


def wilson(successes: int, trials: int) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion."""
    if trials == 0:
        return (math.nan, math.nan)
    p = successes / trials
    denominator = 1 + Z95**2 / trials
    centre = (p + Z95**2 / (2 * trials)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / trials + Z95**2 / (4 * trials**2)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def row(label: str, judged: Sequence[Judged], seconds: float, threshold: float) -> Row:
    return Row(
        label=label,
        pairs=len(judged),
        detected=sum(j.candidate.flagged(threshold) for j in judged),
        false_positives=sum(j.control.flagged(threshold) for j in judged),
        candidate_means=tuple(_mean([j.candidate.scores[i] for j in judged]) for i in INDICATORS),
        control_means=tuple(_mean([j.control.scores[i] for j in judged]) for i in INDICATORS),
        samples_per_s=2 * len(judged) / seconds if seconds > 0 else math.inf,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def rows(judged: Sequence[Judged], seconds: dict[tuple[str, str], float], threshold: float) -> list[Row]:
    """Per generator: one row per error type, then its total ("generator / type")."""
    out: list[Row] = []
    for generator in dict.fromkeys(g for g, _ in seconds):
        mine = [j for j in judged if j.case.generator == generator]
        for (g, t), s in seconds.items():
            if g == generator:
                out.append(row(f"{generator} / {t}", [j for j in mine if j.case.note.error_type == t], s, threshold))
        spent = sum(s for (g, _), s in seconds.items() if g == generator)
        out.append(row(f"**{generator} / total**", mine, spent, threshold))
    return out


def curve(judged: Sequence[Judged]) -> dict[str, list[tuple[float, float, float]]]:
    """Per generator: (t, detection, false positives) when a sample is flagged by a finding of confidence >= t."""
    out: dict[str, list[tuple[float, float, float]]] = {}
    for generator in dict.fromkeys(j.case.generator for j in judged):
        mine = [j for j in judged if j.case.generator == generator]
        out[generator] = [
            (t, sum(j.candidate.level >= max(t, 1e-9) for j in mine) / len(mine),
             sum(j.control.level >= max(t, 1e-9) for j in mine) / len(mine))
            for t in CURVE
        ]  # fmt: skip
    return out


def same_curve(judged: Sequence[Judged]) -> dict[str, list[tuple[float, float, float]]]:
    """cef-cascade, per generator: (s, detection, false positives) when the judge model overrules a finding at
    P(same facts) >= s (s = 1.0: it overrules none, which is cef-lite's verdict); empty for other methods."""
    if not any(j.candidate.doubt not in (None, -1.0) or j.control.doubt not in (None, -1.0) for j in judged):
        return {}
    out: dict[str, list[tuple[float, float, float]]] = {}
    for generator in dict.fromkeys(j.case.generator for j in judged):
        mine = [j for j in judged if j.case.generator == generator]

        def share(side: str, s: float, mine: list[Judged] = mine) -> float:
            doubts: list[float | None] = [getattr(j, side).doubt for j in mine]
            return sum(d is not None and (d < s or s >= 1.0) for d in doubts) / len(mine)

        out[generator] = [(s, share("candidate", s), share("control", s)) for s in SAME_CURVE]
    return out


def same_table(points: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    if not points:
        return []
    lines = ["", "Detection / false positives (%) when the judge model overrules a finding at P(same facts) >= s "
             "(s=1.0: none overruled, cef-lite alone):", ""]  # fmt: skip
    lines += ["| generator | " + " | ".join(f"s={s:g}" for s in SAME_CURVE) + " |", "|---|" + "---:|" * len(SAME_CURVE)]
    for generator, found in points.items():
        lines.append(f"| {generator} | " + " | ".join(f"{100 * d:.0f} / {100 * f:.0f}" for _, d, f in found) + " |")
    return lines


def curve_table(points: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    lines = ["", "Detection / false positives (%) when any finding with confidence >= t flags the sample:", ""]
    lines += ["| generator | " + " | ".join(f"t={t:.1f}" for t in CURVE) + " |", "|---|" + "---:|" * len(CURVE)]
    for generator, found in points.items():
        lines.append(f"| {generator} | " + " | ".join(f"{100 * d:.0f} / {100 * f:.0f}" for _, d, f in found) + " |")
    return lines


def table(found: Sequence[Row]) -> list[str]:
    lines = [
        "| generator / error type | pairs | detection % [95% CI] | false positives % [95% CI] | coverage cand / ctrl "
        "| conformity cand / ctrl | consistency cand / ctrl | samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in found:
        means = " | ".join(map(_means, r.candidate_means, r.control_means))
        lines.append(
            f"| {r.label} | {r.pairs} | {_percent(r.detected, r.pairs)} | {_percent(r.false_positives, r.pairs)} "
            f"| {means} | {r.samples_per_s:,.0f} |"
        )
    return lines


def _percent(successes: int, trials: int) -> str:
    low, high = wilson(successes, trials)
    return f"{100 * successes / trials:.1f} [{100 * low:.1f}-{100 * high:.1f}]"


def _means(candidate: float | None, control: float | None) -> str:
    return f"{_score(candidate)} / {_score(control)}"


def _score(value: float | None) -> str:
    return "null" if value is None else f"{value:.3f}"


def misses(judged: Sequence[Judged], threshold: float, count: int) -> list[str]:
    """Evidence (never the notes) for the first ``count`` missed detections and false positives."""
    missed = [(j, j.candidate) for j in judged if not j.candidate.flagged(threshold)]
    flagged = [(j, j.control) for j in judged if j.control.flagged(threshold)]
    lines: list[str] = []
    for title, found in (("Missed detections (candidate not flagged)", missed), ("False positives", flagged)):
        found.sort(key=lambda pair: pair[0].case.generator)
        lines += ["", f"### {title}: first {min(count, len(found))} of {len(found)}", ""]
        lines += [line for j, s in found[:count] for line in _evidence(j, s)]
    return lines


def _evidence(judged: Judged, result: Scored) -> list[str]:
    scores = ", ".join(f"{i.removeprefix('fidelity_')} {_score(result.scores[i])}" for i in INDICATORS)
    note = judged.case.note
    lines = [f"- {note.text_id} ({judged.case.generator}, {note.error_type}): {scores}"]
    for indicator, items in result.evidence.items():
        shown = json.dumps(items[:MAX_EVIDENCE_SHOWN], ensure_ascii=False, default=str)
        more = f" (+{len(items) - MAX_EVIDENCE_SHOWN} more)" if len(items) > MAX_EVIDENCE_SHOWN else ""
        lines.append(f"  - {indicator.removeprefix('fidelity_')}: {shown}{more}")
    return lines


def rewrite_report(pairs: Sequence[Pair], skipped: int) -> list[str]:
    """What share of notes got each operation, and the checks that the rewrite isolates the planted error."""
    n = len(pairs)

    def share(count: int) -> str:
        return f"{count} ({100 * count / n:.0f} %)" if n else "0"

    operations = [
        (
            "at least one abbreviation",
            sum(bool(p.abbreviated) for p in pairs),
            _avg([len(p.abbreviated) for p in pairs]),
        ),
        ("one sentence dropped", sum(len(p.plan.dropped) == 1 for p in pairs), None),
        ("two sentences dropped", sum(len(p.plan.dropped) == 2 for p in pairs), None),
        ("adjacent sentences swapped", sum(p.plan.swaps > 0 for p in pairs), _avg([p.plan.swaps for p in pairs])),
        ("sentences merged", sum(bool(p.plan.merges) for p in pairs), _avg([len(p.plan.merges) for p in pairs])),
    ]
    normal = {id(p): " ".join(p.note.source.split()) for p in pairs}
    checks = [
        ("candidate and control differ, only inside the error sentence", sum(p.isolated for p in pairs)),
        ("candidate is not the source verbatim", sum(" ".join(p.candidate.split()) != normal[id(p)] for p in pairs)),
        ("control is not the source verbatim", sum(" ".join(p.control.split()) != normal[id(p)] for p in pairs)),
        ("error unit holds MEDEC's Error/Corrected Sentence", sum(p.note.located for p in pairs)),
    ]
    lines = ["## Rewrite", "", "| operation | notes | mean per note |", "|---|---:|---:|"]
    lines += [f"| {name} | {share(c)} | {'' if m is None else f'{m:.2f}'} |" for name, c, m in operations]
    lines += ["", "| check | notes |", "|---|---:|"]
    lines += [f"| {name} | {c} / {n} |" for name, c in checks]
    return [*lines, "", f"Notes with an error left out (their two texts do not differ): {skipped}."]


def _avg(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def examples(pairs: Sequence[Pair], count: int) -> list[str]:
    """Source, candidate and control of the first ``count`` notes, with the plan that rewrote them."""
    lines: list[str] = []
    for p in pairs[:count]:
        abbreviations = ", ".join(
            f"{TABLE[i][1].strip()} x{p.abbreviated.count(i)}" for i in sorted(set(p.abbreviated))
        )
        lines += [
            "",
            f"### {p.note.text_id} ({p.note.error_type})",
            "",
            f"plan: dropped units {list(p.plan.dropped)}, {p.plan.swaps} swap(s), merges {list(p.plan.merges)}, "
            f"abbreviations {abbreviations or 'none'}",
        ]
        for label, text in (("source", p.note.source), ("candidate", p.candidate), ("control", p.control)):
            lines += ["", f"{label}:", "", "```text", text, "```"]
    return lines


def report(method: str, judged: Sequence[Judged], found: Sequence[Row], threshold: float, show: int) -> list[str]:
    """The markdown section of one method."""
    nulls = [sum(getattr(j, k).scores[i] is None for j in judged) for k in ("candidate", "control") for i in FLAGGING]
    lines = ["", f"## {method}", "", *table(found), *curve_table(curve(judged)), *same_table(same_curve(judged)), ""]
    lines.append(
        f"Null scores (never flag): conformity {nulls[0]} / consistency {nulls[1]} on candidates, "
        f"{nulls[2]} / {nulls[3]} on controls. Means are over non-null scores."
    )
    return lines + (misses(judged, threshold, show) if show else [])


def header(args: argparse.Namespace, found: Sequence[Case]) -> list[str]:
    counts = ", ".join(f"{g} {sum(c.generator == g for c in found)}" for g in dict.fromkeys(c.generator for c in found))
    return [
        f"# Fidelity judges on planted clinical errors: {CITATION}",
        "",
        f"Command: `{shlex.join(sys.orig_argv)}`",
        "",
        f"Data: {args.data.name}, {args.half} half; notes with a planted error per generator: {counts}; "
        f"rewrite seed {args.seed}.",
        "Source = the corrected note; candidate = the note with the error; control = the corrected note; "
        "candidate and control rewritten alike by each generator.",
        f"Detection rule (fixed before any run): a pair is flagged when conformity < {args.threshold} or "
        f"consistency < {args.threshold}; a null score never flags. Detection rate = flagged candidates / pairs, "
        "false-positive rate = flagged controls / pairs, each with a 95 % Wilson interval.",
        "",
    ]


def as_json(args: argparse.Namespace, found: Sequence[Case], methods: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": sys.orig_argv,
        "data": {
            "file": args.data.name,
            "citation": CITATION,
            "half": args.half,
            "cases": len(found),
            "generators": list(dict.fromkeys(c.generator for c in found)),
            "seed": args.seed,
        },
        "rule": {"threshold": args.threshold, "flagged_when_below": list(FLAGGING), "null_flags": False},
        "methods": methods,
    }


def method_json(judge: Judge, judged: Sequence[Judged], found: Sequence[Row]) -> dict[str, Any]:
    def side(s: Scored) -> dict[str, Any]:
        return {"scores": s.scores, "evidence": s.evidence}

    records = [
        {"text_id": j.case.note.text_id, "generator": j.case.generator, "error_type": j.case.note.error_type}
        | {"candidate": side(j.candidate), "control": side(j.control)}
        for j in judged
    ]
    table_rows = [
        dataclasses.asdict(r)
        | {"detection_ci95": wilson(r.detected, r.pairs), "false_positive_ci95": wilson(r.false_positives, r.pairs)}
        for r in found
    ]
    return {"method": judge.method, "rows": table_rows, "curve": curve(judged), "same_curve": same_curve(judged),
            "pairs": records}  # fmt: skip


def dump(path: Path, pairs: Sequence[Pair]) -> None:
    """Every rewritten pair as one JSON line: source, candidate, control and the plan."""
    with path.open("w", encoding="utf-8") as handle:
        for p in pairs:
            record = {"text_id": p.note.text_id, "error_type": p.note.error_type, "plan": dataclasses.asdict(p.plan)}
            record |= {"source": p.note.source, "candidate": p.candidate, "control": p.control}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--method", action="append", help="judge name in judges.registry, repeatable (cef-lite)")
    parser.add_argument("--config", type=Path, help="gateway configuration file passed to the judges")
    parser.add_argument("--data", type=Path, default=DATA, help="the MEDEC-MS CSV file")
    parser.add_argument(
        "--half",
        choices=(*corpora.HALVES, "all"),
        default="held-out",
        help="which half of MEDEC (default held-out; tune only on the tuning half)",
    )
    parser.add_argument("--generator", action="append", choices=GENERATORS, help="rewrite generator, repeatable")
    parser.add_argument("--limit", type=int, help="only the first N notes with an error")
    parser.add_argument("--seed", type=int, default=0, help="rewrite seed (default 0)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help=f"detection threshold ({THRESHOLD})")
    parser.add_argument("--show-misses", type=int, default=0, metavar="N", help="evidence for N misses and N FPs")
    parser.add_argument("--examples", type=int, default=0, metavar="N", help="print N rewritten notes")
    parser.add_argument("--dump", type=Path, metavar="FILE", help="write every rewritten pair (JSON lines)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    args.method = args.method or ["cef-lite"]
    args.generator = args.generator or list(GENERATORS)
    return args


def judges(args: argparse.Namespace) -> list[Judge]:
    """The judges named by --method, built by the registry with the judging part of --config (or None)."""
    config: GatewayConfig | None = load_config(args.config) if args.config else None
    return registry.build(args.method, config.judging if config is not None else None)


async def run(
    built: Sequence[Judge], found: Sequence[Case], args: argparse.Namespace
) -> tuple[list[str], dict[str, Any]]:
    """Each judge over every case: the markdown sections and the JSON of each method."""
    lines: list[str] = []
    methods: dict[str, Any] = {}
    try:
        for judge in built:
            judged, seconds = await judge_cases(judge, found)
            table_rows = rows(judged, seconds, args.threshold)
            lines += report(f"{judge.name} (method {judge.method})", judged, table_rows, args.threshold,
                            args.show_misses)  # fmt: skip
            methods[judge.name] = method_json(judge, judged, table_rows)
    finally:
        for judge in built:
            await judge.close()
    return lines, methods


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    try:
        built = judges(args)
    except (ConfigError, registry.UnknownJudgeError) as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"MEDEC data not found at {args.data}", file=sys.stderr)
        return 2
    notes, skipped, names = load_notes(args.data)
    notes = [n for n in notes if args.half in ("all", corpora.half(n.text_id))][: args.limit]
    pairs = [pair(n, args.seed, names) for n in notes]
    cache: dict[str, Any] = {}
    if "local-model" in args.generator:
        from bench import paraphrase_medec

        cache = paraphrase_medec.load_cache(paraphrase_medec.CACHE)
    found = [c for g in args.generator for c in cases(g, notes, pairs, cache)]
    if args.dump:
        dump(args.dump, pairs)
    lines, methods = asyncio.run(run(built, found, args))
    print("\n".join([*header(args, found), *rewrite_report(pairs, skipped), *examples(pairs, args.examples), *lines]))
    if args.json:
        args.json.write_text(json.dumps(as_json(args, found, methods), indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
