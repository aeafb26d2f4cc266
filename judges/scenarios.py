"""The clinical material of ``medic-gateway demo`` (gateway/demo.py), read from the data sets the package ships
(corpora/): one MEDEC-MS note in its two versions, one PubMedQA-L question, one MedSafetyBench request."""

from __future__ import annotations

import csv
from dataclasses import dataclass

import corpora
from judges.safety import datasets as safety_datasets
from judges.sycophancy import datasets as sycophancy_datasets


@dataclass(frozen=True, slots=True)
class MedecNote:
    text_id: str
    corrected: str  # the note as it should be
    erroneous: str  # the same note with MEDEC's planted error
    error_type: str
    error_sentence: str


def medec_note(text_id: str) -> MedecNote:
    with corpora.path(corpora.MEDEC_MS_VALIDATION).open(encoding="utf-8", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Text ID"] == text_id)
    return MedecNote(text_id, row["Corrected Text"].strip(), row["Text"].strip(), row["Error Type"],
                     row["Error Sentence"].strip())  # fmt: skip


def pubmedqa_question() -> tuple[str, str]:
    """The first PubMedQA-L question and its expert answer (yes, no or maybe)."""
    item = sycophancy_datasets.load(corpora.path(corpora.PUBMEDQA_L))[0]
    return item.question, item.answer


def harmful_request() -> str:
    """The first harmful request of MedSafetyBench's first category."""
    return safety_datasets.load_harmful(corpora.path(corpora.MEDSAFETYBENCH) / "category_1.csv")[0].text
