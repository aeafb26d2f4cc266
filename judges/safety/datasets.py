"""The safety probes' data, each packaged with the project (``corpora``) and replaceable by a file of the same format.

- Harmful medical requests for ``probe safety``: MedSafetyBench (Han et al. 2024), ``category_N.csv`` files with
  the column ``harmful_medical_request``; a request's category is its file's name.
- Benign clinical requests for ``probe safety``: the questions of PubMedQA-L (Jin et al. 2019), without their
  abstracts.
- Clinical notes for ``probe audit``: MEDEC (Ben Abacha et al., Findings of ACL 2025; CC BY 4.0), each either
  correct or with exactly one planted error, its sentences numbered as MEDEC numbers them.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

import corpora
from judges.sycophancy.datasets import DatasetError, load

HARMFUL_DEFAULT = corpora.path(corpora.MEDSAFETYBENCH)  # the packaged MedSafetyBench test split
BENIGN_DEFAULT = corpora.path(corpora.PUBMEDQA_L)
DEFAULT_DATASET = corpora.path(corpora.MEDEC_MS_VALIDATION)  # the packaged MEDEC-MS validation split
CITATION = (
    "MEDEC: A. Ben Abacha et al., MEDEC: A Benchmark for Medical Error Detection and Correction in Clinical "
    "Notes, Findings of ACL 2025; data CC BY 4.0, github.com/abachaa/MEDEC"
)
REQUEST_COLUMN = "harmful_medical_request"
CATEGORY_FILE = re.compile(r"category_(\d+)$")
ERROR_TYPES = ("diagnosis", "management", "treatment", "pharmacotherapy", "causalOrganism")
COLUMNS = ("Text ID", "Sentences", "Error Flag", "Error Type", "Error Sentence ID", "Corrected Sentence")
BLANK = {"", "none", "n/a", "na", "-"}  # a value that says there is none (MEDEC's corrections, audit replies)


@dataclass(frozen=True, slots=True)
class Request:
    """One probe request; ``category`` is its MedSafetyBench category, None for a benign request."""

    id: str
    text: str
    category: str | None = None


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


# ------------------------------------------------------------------------------- harmful and benign requests


def load_harmful(path: Path) -> list[Request]:
    """MedSafetyBench requests from one ``category_N.csv`` or a folder of them, in category order."""
    files = sorted(path.glob("category_*.csv"), key=lambda f: category_order(f.stem)) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise DatasetError(f"{path}: no MedSafetyBench category_N.csv file")
    return [request for file in files for request in _category_requests(file)]


def category_order(category: str) -> tuple[int, str]:
    """Sorts category_2 before category_10."""
    match = CATEGORY_FILE.search(category)
    return (int(match.group(1)) if match else 0, category)


def _category_requests(path: Path) -> list[Request]:
    """The requests of one category file; the file's name (``category_3``) is their category."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    if REQUEST_COLUMN not in (reader.fieldnames or []):
        raise DatasetError(f"{path}: no column {REQUEST_COLUMN!r}")
    texts = [str(row[REQUEST_COLUMN] or "").strip() for row in rows]
    return [Request(f"{path.stem}:{number}", text, path.stem) for number, text in enumerate(texts) if text]


def load_benign(path: Path) -> list[Request]:
    """Benign clinical requests: the questions of a PubMedQA-L file (its QUESTION fields), without context."""
    return [Request(item.id, item.question.strip()) for item in load(path) if item.question.strip()]


# ------------------------------------------------------------------------------------------------ MEDEC notes


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
    if corrected.strip().lower() in BLANK:
        raise AuditDatasetError(f"{where}: a note with an error needs its Corrected Sentence")
    return Note(row["Text ID"], sentences, error_type, int(sentence_id), corrected.strip())
