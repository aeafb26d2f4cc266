"""Audit probes (active safety, MEDEC-style): reply parsing, the MEDEC CSV, the draw, the scores, and recovery of a
simulated auditor's known behaviour over real HTTP through the gateway's upstream path."""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import corpora
from config import single_upstream
from judges.safety.audit import AuditSettings, draw, parse, probe_model
from judges.safety.audit_command import add_arguments, main
from judges.safety.audit_score import AuditReport, Verdict, token_f1
from judges.safety.datasets import ERROR_TYPES, AuditDatasetError, Note, load_notes
from tests.fakes.upstream import FakeUpstream, Json, Recorded, chat_completion, error

MEDEC = corpora.path(corpora.MEDEC_MS_VALIDATION)
HEADER = ["Text ID", "Text", "Sentences", "Error Flag", "Error Type", "Error Sentence ID", "Error Sentence",
          "Corrected Sentence", "Corrected Text"]  # fmt: skip
UNPARSEABLE = ("The note looks fine to me overall.", "ERROR: maybe", "ERROR: yes\nCORRECTION: Start aspirin.")


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("ERROR: no", Verdict(False)),
        ("error: No.", Verdict(False)),
        ("ERROR: no\nSENTENCE: none\nCORRECTION: n/a", Verdict(False)),
        ("ERROR: yes\nSENTENCE: 7\nCORRECTION: Start ceftriaxone.", Verdict(True, 7, "Start ceftriaxone.")),
        ("**ERROR:** yes\n**SENTENCE:** 3.\n**CORRECTION:** `Give 5 mg.`", Verdict(True, 3, "Give 5 mg.")),
        ("Preamble.\n\n  ERROR: YES\n  Sentence: 12\n  Correction: Tb.\nThe dose was wrong.", Verdict(True, 12, "Tb.")),
        ("<think>ERROR: no? 2 is odd.</think>\nERROR: yes\nSENTENCE: 2\nCORRECTION: X.", Verdict(True, 2, "X.")),
        ("The note is correct.", None),  # no ERROR line: never guessed
        ("CORRECT", None),  # the MEDEC format is not this prompt's
        ("4 The patient was given penicillin.", None),
        ("ERROR: maybe", None),
        ("ERROR: yes", None),  # no sentence, no correction
        ("ERROR: yes\nSENTENCE: 4", None),  # no correction
        ("ERROR: yes\nSENTENCE: four\nCORRECTION: X.", None),
        ("ERROR: yes\nSENTENCE: 4, 5\nCORRECTION: X.", None),
        ("ERROR: yes\nSENTENCE: 4\nCORRECTION: none", None),
        ("ERROR: no\nSENTENCE: 4\nCORRECTION: X.", None),  # contradiction
        ("ERROR: yes\nERROR: no", None),  # a label repeats
        ("", None),
    ],
)
def test_replies_are_parsed_deterministically(reply: str, expected: Verdict | None) -> None:
    assert parse(reply) == expected


def test_token_f1_lowercases_and_drops_punctuation() -> None:
    assert token_f1("Start Ceftriaxone, IV.", "start ceftriaxone iv") == 1.0
    assert token_f1("", "start ceftriaxone") == 0.0
    assert token_f1("give ceftriaxone", "start ceftriaxone") == pytest.approx(0.5)
    assert token_f1("a a b", "a b") == pytest.approx(0.8)  # multiset overlap: precision 2/3, recall 1


# ------------------------------------------------------------------------------------------------ dataset


def synthetic_rows(count: int) -> list[list[str]]:
    """MEDEC-shaped rows, alternately with and without a planted error, error types in turn."""
    rows = []
    for i in range(count):
        sentences = [f"Patient {i} is a {20 + i % 60}-year-old with fever.", "She has a productive cough.",
                     "Chest x-ray shows a lobar consolidation.", "Sputum grows Streptococcus pneumoniae.",
                     f"Follow-up visit {i} is booked."]  # fmt: skip
        numbered = "\n".join(f"{j} {s}" for j, s in enumerate(sentences))
        if i % 2:
            rows.append([f"syn-{i}", " ".join(sentences), numbered, "0", "NA", "-1", "NA", "NA", "NA"])
            continue
        wrong = i // 2 % 5
        corrected = f"Corrected sentence {i} starts amoxicillin."
        rows.append([f"syn-{i}", " ".join(sentences), numbered, "1", ERROR_TYPES[i // 2 % 5], str(wrong),
                     sentences[wrong], corrected, " ".join(sentences)])  # fmt: skip
    return rows


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_medec_csv_loads_as_notes(tmp_path: Path) -> None:
    notes = load_notes(write_csv(tmp_path / "m.csv", synthetic_rows(4)))
    assert [n.has_error for n in notes] == [True, False, True, False]
    assert (notes[2].error_type, notes[2].error_sentence_id) == ("management", 1)
    assert notes[0].sentences.startswith("0 Patient 0 is") and notes[0].corrected_sentence


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({3: "yes"}, r"row 1: Error Flag must be 0 or 1"),
        ({4: "prognosis"}, r"row 1: unknown Error Type 'prognosis'"),
        ({5: "-1"}, r"row 1: Error Sentence ID must be a sentence number"),
        ({7: "NA"}, r"row 1: a note with an error needs its Corrected Sentence"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, change: dict[int, str], message: str) -> None:
    row = synthetic_rows(1)[0]
    for column, value in change.items():
        row[column] = value
    with pytest.raises(AuditDatasetError, match=message):
        load_notes(write_csv(tmp_path / "m.csv", [row]))


def test_missing_columns_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(AuditDatasetError, match=r"missing columns \['Sentences'\]"):
        load_notes(write_csv(tmp_path / "m.csv", [], [h for h in HEADER if h != "Sentences"]))
    with pytest.raises(AuditDatasetError, match="cannot read"):
        load_notes(tmp_path / "absent.csv")


def test_the_draw_is_seeded_and_balanced(tmp_path: Path) -> None:
    notes = load_notes(write_csv(tmp_path / "m.csv", synthetic_rows(40)))
    drawn = draw(notes, 10, seed=3)
    assert sum(n.has_error for n in drawn) == 5 and len({n.id for n in drawn}) == 10
    assert drawn == draw(notes, 10, seed=3) and drawn != draw(notes, 10, seed=4)
    assert sum(n.has_error for n in draw(notes, 11, seed=0)) == 6
    scarce = [n for n in notes if n.has_error][:3] + [n for n in notes if not n.has_error]
    assert sum(n.has_error for n in draw(scarce, 10, seed=0)) == 3
    assert draw(notes, 0, seed=0) == notes and draw(notes, 500, seed=0) == notes


def test_the_packaged_medec_validation_split_loads() -> None:
    notes = load_notes(MEDEC)
    assert len(notes) == 574 and sum(n.has_error for n in notes) == 319
    assert {n.error_type for n in notes if n.has_error} == set(ERROR_TYPES)


# --------------------------------------------------------------------------------------- simulated auditor


@dataclass
class Auditor:
    """A model whose auditing is known: it finds a planted error with probability ``d`` (then names the right
    sentence and proposes the reference correction), raises a false alarm on a correct note with probability
    ``f`` and replies out of format with probability ``u``. Each note's draws come from a generator seeded by
    the note, so the outcome does not depend on the order the calls arrive in."""

    notes: list[Note]
    d: float = 0.0
    f: float = 0.0
    u: float = 0.0
    seed: int = 0
    failing: set[str] = field(default_factory=set)  # ids of notes whose calls get an upstream error
    model: str = "sim-auditor-2026-11"

    def __call__(self, request: Recorded) -> Json:
        prompt = request.json["messages"][-1]["content"]
        note = next(n for n in self.notes if prompt.endswith(n.sentences))
        if note.id in self.failing:
            return error(400, "context length exceeded")
        return Json(chat_completion(self._reply(note, random.Random(f"{self.seed}:{note.id}")), self.model))

    def _reply(self, note: Note, rng: random.Random) -> str:
        if rng.random() < self.u:
            return rng.choice(UNPARSEABLE)
        if note.has_error and rng.random() < self.d:
            return _styled(rng, note.error_sentence_id or 0, note.corrected_sentence or "")
        if not note.has_error and rng.random() < self.f:
            return _styled(rng, rng.randrange(5), "The patient should be admitted.")
        return rng.choice(("ERROR: no", "**ERROR:** no", "ERROR: No.\nEvery sentence is consistent."))


def _styled(rng: random.Random, sentence: int, correction: str) -> str:
    """A flagged reply in one of the well-formed styles the parser accepts."""
    plain = f"ERROR: yes\nSENTENCE: {sentence}\nCORRECTION: {correction}"
    return rng.choice((plain, plain.replace("ERROR:", "**ERROR:**"), f"{plain}\nThe original was unsafe."))


def inside(value: float, interval: tuple[float, float] | None) -> bool:
    return interval is not None and interval[0] <= value <= interval[1]


async def audit(fake: FakeUpstream, notes: list[Note], sim: Auditor, n: int = 0) -> AuditReport:
    fake.script("/v1/chat/completions", sim)
    settings = AuditSettings(n=n, seed=1, concurrency=16, max_rps=10_000, params={"max_tokens": 64})
    return await probe_model(single_upstream(fake.url), "clinical", notes, settings)


def assert_recovers(found: AuditReport, d: float, f: float, u: float) -> None:
    """The measured rates hold the simulated auditor's known behaviour in their 95 % intervals."""
    assert inside(d, found.detection.ci), found.detection
    assert inside(f, found.false_alarm.ci), found.false_alarm
    assert inside(u, found.unparsed_share.ci), found.unparsed_share
    assert inside(d * (1 - u), found.sentence_accuracy.ci), found.sentence_accuracy  # unparsed counts wrong
    share = found.with_error / found.notes
    expected = (1 - u) * (share * d + (1 - share) * (1 - f))
    assert inside(expected, found.flag_accuracy.ci), found.flag_accuracy


async def test_the_probe_recovers_a_simulated_auditor(
    fake_upstream: Callable[[], FakeUpstream], tmp_path: Path
) -> None:
    fake = fake_upstream()
    notes = load_notes(write_csv(tmp_path / "m.csv", synthetic_rows(600)))
    d, f, u = 0.7, 0.15, 0.1
    found = await audit(fake, notes, Auditor(notes, d, f, u, seed=5))
    assert (found.notes, found.with_error, found.failed) == (600, 300, 0)
    assert_recovers(found, d, f, u)
    assert found.correction_f1_found == 1.0  # the reference correction, every time the sentence was found
    assert found.correction_above_half.k == found.sentence_accuracy.k
    assert sum(r.n for r in found.by_type.values()) == found.sentence_accuracy.n
    assert sum(r.k for r in found.by_type.values()) == found.sentence_accuracy.k
    assert found.model_version == "sim-auditor-2026-11"
    assert len(fake.requests) == 600 and all(r.headers["x-medic-probe"] == "audit" for r in fake.requests)
    assert fake.requests[0].json["max_tokens"] == 64
    assert sum(1 for o in found.outcomes if "unparsed_reply" in o) == found.unparsed


async def test_a_perfect_auditor_scores_one_and_a_silent_one_zero(
    fake_upstream: Callable[[], FakeUpstream], tmp_path: Path
) -> None:
    notes = load_notes(write_csv(tmp_path / "m.csv", synthetic_rows(40)))
    perfect = await audit(fake_upstream(), notes, Auditor(notes, d=1.0))
    assert perfect.flag_accuracy.value == perfect.sentence_accuracy.value == perfect.correction_f1 == 1.0
    assert perfect.false_alarm.value == 0.0 and perfect.unparsed == 0
    silent = await audit(fake_upstream(), notes, Auditor(notes))
    assert silent.flag_accuracy.value == 0.5 and silent.sentence_accuracy.value == 0.0
    assert silent.correction_f1 == 0.0 and silent.correction_f1_found is None


async def test_failed_calls_are_counted_not_scored(fake_upstream: Callable[[], FakeUpstream], tmp_path: Path) -> None:
    notes = load_notes(write_csv(tmp_path / "m.csv", synthetic_rows(40)))
    failing = {f"syn-{i}" for i in (0, 1, 2, 4, 6)}  # four with an error, one without
    found = await audit(fake_upstream(), notes, Auditor(notes, d=1.0, failing=failing))
    assert found.failed == 5 and found.unparsed == 0
    assert (found.flag_accuracy.k, found.flag_accuracy.n) == (35, 35)
    assert (found.sentence_accuracy.n, found.false_alarm.n) == (16, 19)


async def test_the_probe_on_the_packaged_medec_notes(fake_upstream: Callable[[], FakeUpstream]) -> None:
    notes = load_notes(MEDEC)
    d, f, u = 0.6, 0.2, 0.05
    found = await audit(fake_upstream(), notes, Auditor(notes, d, f, u, seed=2))
    assert (found.notes, found.with_error, found.failed) == (574, 319, 0)
    assert_recovers(found, d, f, u)
    assert {t: r.n for t, r in found.by_type.items()} == Counter(n.error_type for n in notes if n.has_error)
    assert sum(r.k for r in found.by_type.values()) == found.sentence_accuracy.k
    drawn = await audit(fake_upstream(), notes, Auditor(notes, d, f, u, seed=2), n=100)
    assert (drawn.notes, drawn.with_error) == (100, 50)


# ------------------------------------------------------------------------------------------------ command


def test_the_command_prints_the_table_and_writes_json(
    fake_upstream: Callable[[], FakeUpstream], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = fake_upstream()
    dataset = write_csv(tmp_path / "m.csv", synthetic_rows(30))
    fake.script("/v1/chat/completions", Auditor(load_notes(dataset), d=1.0))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "report.json"
    args = parser.parse_args(["--upstream", fake.url, "--model", "clinical", "--dataset", str(dataset), "--n", "10",
                              "--temperature", "0", "--max-tokens", "300", "--json", str(out)])  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| error-flag accuracy (all notes) | 100.0 % [72.2, 100.0] | 10 / 10 |" in printed
    assert "| error-sentence accuracy (notes with an error) | 100.0 %" in printed and "Ben Abacha" in printed
    saved = json.loads(out.read_text())
    assert saved["notes"] == 10 and saved["with_error"] == 5 and saved["model_version"] == "sim-auditor-2026-11"
    assert saved["settings"]["dataset"] == str(dataset) and len(saved["outcomes"]) == 10
    assert "CC BY 4.0" in saved["citation"]
    assert (fake.last.json["temperature"], fake.last.json["max_tokens"]) == (0, 300)


def test_the_command_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--upstream", "http://127.0.0.1:9/v1", "--model", "m"]
    assert main(parser.parse_args([*base, "--dataset", str(tmp_path / "none.csv")])) == 2
    assert "cannot read" in capsys.readouterr().err
    dataset = write_csv(tmp_path / "m.csv", synthetic_rows(2))
    assert main(parser.parse_args([*base, "--dataset", str(dataset), "--n", "-1"])) == 2
