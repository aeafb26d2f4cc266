"""The identifier recognisers run each pattern only where it can match; that must find what a pass of every
pattern over the whole text finds, identifiers or not."""

from __future__ import annotations

import csv
import random

import pytest

import corpora
from tests.pipeline.test_privacy import NOTE, REPLY
from text.identifiers import matches

MEDEC = corpora.path(corpora.MEDEC_MS_VALIDATION)

# One of each kind the recognisers know, in the forms the privacy tests use, and near-misses that must stay
# unmatched (doses, lab values, times, versions, ages under 90).
PIECES = [
    "j.roe+notes@mail.example.co.uk", "(555) 123-4567", "555.123.4567", "Cell 5551234567", "1-800-555-0199 x204",
    "+44 20 7946 0958", "+44 (0)20 7946 0958", "0049 30 1234567", "020 7946 0958", "Fax: 555 1234",
    "MR# A1234567", "medical record number 987654", "Patient ID: P-12345", "SSN 123-45-6789", "123-45-6789",
    "Encounter #: 889900", "DEA number AB1234563", "NPI 1234567893", "member id XZ-99812", "1/2/2024", "2024-01-02",
    "02.01.2024", "03/2024", "January 2nd, 2024", "2 January 2024", "3rd of March", "January 2024", "Jan 2, 2024",
    "DOB: 14031950", "D.O.B. 1950-01-02", "date of birth 1950", "1600 Pennsylvania Ave NW, Washington, DC 20500",
    "12 Oak St., Apt 4, Springfield, IL 62704", "Boston, MA 02115-1234", "Home address: 4 Rue de la Paix, Paris",
    "www.example.org/records", "https://portal.example.org/p/8812", "fe80::1", "192.168.1.20",
    "Prof. J. Smith", "Attending: Dr. Maria Garcia-Lopez", "Patient named Sean O'Brien", "my name is Priya Patel",
    "Electronically signed by: Amy Wu, MD", "John Smith (age 70)", "Lee Kim is a 70-year-old man", "a 92-year-old",
    "101 years old", "95 y/o", "aged 94", "Mrs Roe", "Referring physician: Amy Wu", "Jane Roe, MRN 123456",
    "Metformin 500 mg", "INR 2.4", "BP 120/80", "1/2 tablet", "Na 135-145 mmol/L", "Time 12:30", "version 1.2.3",
    "a 89-year-old", "aged 65", "platelets 150 250 1000", "Dr Smith Metformin", "Tel. (0)20 7946 0958",
]  # fmt: skip


def medec_texts() -> list[str]:
    with MEDEC.open(newline="", encoding="utf-8") as f:
        return [row["Text"] for row in csv.DictReader(f)]


def spans(text: str, everywhere: bool) -> list[tuple[int, int, str]]:
    return sorted((s.start, s.end, s.kind) for s in matches(text, everywhere=everywhere))


@pytest.mark.parametrize("text", [NOTE, REPLY, *PIECES])
def test_each_piece_is_found_as_by_a_full_pass(text: str) -> None:
    for framed in (text, f"Seen today. {text}. Plan: rest.", f"{text}\n{text}"):
        assert spans(framed, everywhere=False) == spans(framed, everywhere=True)


def test_medec_notes_are_scanned_as_by_a_full_pass() -> None:
    texts = medec_texts()
    assert len(texts) > 500
    found = 0
    for text in texts:
        fast = spans(text, everywhere=False)
        assert fast == spans(text, everywhere=True), text[:80]
        found += len(fast)
    assert found > 0  # the notes hold dates and ages: the comparison is not between two empty lists


# What may follow a piece: a unit or word that a pattern's lookahead reads ("020 7946 0958 lymph" is a phone
# number, "0958 L" would be a volume), so that a stretch cut short before it would show.
AFTER = ["", ",", ".", " ", "\n", "  mg", " tablets", "\t", "(", "-", " years old", " lymph", " L ", "/2024"]


def test_identifiers_mixed_into_notes_are_found_as_by_a_full_pass() -> None:
    rng = random.Random(7)
    for text in medec_texts():
        words = text.split(" ")
        for _ in range(rng.randint(1, 6)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(PIECES) + rng.choice(AFTER))
        mixed = " ".join(words)
        assert spans(mixed, everywhere=False) == spans(mixed, everywhere=True), mixed[:120]
