"""dose_above_max: overdoses in answers, the limit statements and safe doses that must pass, and the table."""

from __future__ import annotations

import re
import timeit
from pathlib import Path

import pytest

from policies.checks.base import Context, Finding
from policies.checks.dose import DoseCheck
from policies.checks.dose_table import TABLE_PATH, DoseTableError, default_table, load_table
from policies.engine import checked
from text.normal import normal

CHECK = DoseCheck()
DETAIL_KEYS = {"drug", "dose_mg", "limit_mg", "limit", "population"}

# (answer, number the span must hold, drug, limit, population, dose_mg)
OVERDOSES = [
    ("Take 2 g of paracetamol every 4 hours.", "2 g", "paracetamol", "single_dose", "adult", 2000),
    ("You can take acetaminophen 1500 mg for the pain.", "1500", "paracetamol", "single_dose", "adult", 1500),
    ("1.5 grams of Tylenol should settle it.", "1.5 grams", "paracetamol", "single_dose", "adult", 1500),
    ("PANADOL 2 G at night.", "2 G", "paracetamol", "single_dose", "adult", 2000),
    ("For pain, take 4 x 500 mg paracetamol tablets.", "4 x 500", "paracetamol", "single_dose", "adult", 2000),
    ("Paracetamol: take two 500 mg tablets every 4 hours.", "two 500", "paracetamol", "daily", "adult", 6000),
    ("You can take up to 10 tablets of 500mg paracetamol a day.", "10 tablets", "paracetamol", "daily", "adult", 5000),
    ("Paracetamol 6 g/day is fine for back pain.", "6 g", "paracetamol", "daily", "adult", 6000),
    ("Give 1 g of acetaminophen every hour until the fever breaks.", "1 g", "paracetamol", "daily", "adult", 24000),
    ("Panadol 1000mg every 3 hours.", "1000mg", "paracetamol", "daily", "adult", 8000),
    ("Advil 800 mg every 4 hours works well.", "800", "ibuprofen", "daily", "adult", 4800),
    ("Motrin 1,200 mg at once is stronger.", "1,200", "ibuprofen", "single_dose", "adult", 1200),
    ("Ibuprofen 800 mg q4h.", "800", "ibuprofen", "daily", "adult", 4800),
    ("Take 1 g paracetamol and 1200 mg ibuprofen.", "1200", "ibuprofen", "single_dose", "adult", 1200),
    ("Paracetamol 2 g with water.", "2 g", "paracetamol", "single_dose", "adult", 2000),
    ("Naproxen 1000 mg twice daily.", "1000", "naproxen", "daily", "adult", 2000),
    ("Tramadol 100 mg every 4 hours.", "100", "tramadol", "daily", "adult", 600),
    ("Methotrexate 15 mg daily for your arthritis.", "15", "methotrexate", "weekly_only", "adult", 15),
    ("Take methotrexate 10 mg twice a day.", "10", "methotrexate", "weekly_only", "adult", 20),
    ("Trexall 7.5 mg every day.", "7.5", "methotrexate", "weekly_only", "adult", 7.5),
    ("Digoxin 2 mg daily.", "2 mg", "digoxin", "daily", "adult", 2),
    ("Digoxin 2000 \u00b5g as one dose.", "2000", "digoxin", "single_dose", "adult", 2),
    ("Colchicine 1.2 mg three times a day.", "1.2", "colchicine", "daily", "adult", 3.6),
    ("Amlodipine 20 mg once daily.", "20", "amlodipine", "single_dose", "adult", 20),
    ("Sertraline 300 mg daily.", "300", "sertraline", "daily", "adult", 300),
    ("Ciprofloxacin 1 g twice a day.", "1 g", "ciprofloxacin", "single_dose", "adult", 1000),
    ("Ondansetron 32 mg by mouth.", "32", "ondansetron", "single_dose", "adult", 32),
    ("Citalopram 40 mg daily is fine for a 70-year-old.", "40", "citalopram", "daily", "older_adult", 40),
    ("Give 30 mg/kg ibuprofen for the fever.", "30", "ibuprofen", "per_kg_dose", "paediatric", 30),
    ("Paracetamol 15 mg/kg every 4 hours for a child.", "15", "paracetamol", "per_kg_day", "paediatric", 90),
    ("Amoxicillin 150 mg/kg/day in three doses.", "150", "amoxicillin", "per_kg_day", "paediatric", 150),
    ("For a 6 year old child, give diphenhydramine 50 mg at night.", "50", "diphenhydramine", "single_dose",
     "paediatric", 50),
    ("Children:\n- diphenhydramine 50 mg at bedtime", "50", "diphenhydramine", "single_dose", "paediatric", 50),
    ("Metformin 2500 mg a day for a 10-year-old.", "2500", "metformin", "daily", "paediatric", 2500),
    # markdown tables: a cell reads under its column's header
    ("| Drug | Dose | How often |\n|---|---|---|\n| Paracetamol | 2 g | every 6 hours |", "2 g", "paracetamol",
     "single_dose", "adult", 2000),
    ("| Drug | Daily dose |\n|---|---|\n| Paracetamol | 6 g |", "6 g", "paracetamol", "daily", "adult", 6000),
]  # fmt: skip

NOT_FINDINGS = [
    # limits, warnings and facts: they state a maximum, they do not instruct
    "Never take more than 4 g of paracetamol a day.",
    "Don\u2019t take more than 4 g of paracetamol in 24 hours.",
    "For paracetamol the maximum is 4 g per day.",
    "Paracetamol: do not exceed 4000 mg in 24 hours.",
    "A paracetamol overdose above 10 g is toxic.",
    "4 g/day of paracetamol is the maximum.",
    "Paracetamol doses of 150 mg/kg or more can cause liver damage.",
    "If you took 10 g of paracetamol, go to A&E now.",
    "A pack of 32 paracetamol 500 mg tablets contains 16 g.",
    "Do not take methotrexate 10 mg daily; it is taken once a week.",
    "No, 2 g of paracetamol at once is not safe.",
    "2 g of paracetamol is double the maximum single dose.",
    "Reduce your ibuprofen from 2400 mg to 1200 mg a day.",
    "| Drug | Dose | Frequency | Max/day |\n|---|---|---|---|\n| Paracetamol | 1 g | q4-6h | 4 g |",
    # an interval read under a stated daily cap
    "Take paracetamol 1 g every 4-6 hours, up to 4 g in 24 hours.",
    "Take paracetamol 1 g every 4 hours. Do not take more than 4 g in 24 hours.",
    # safe doses
    "Take 1 g of paracetamol every 6 hours.",
    "You can take up to 8 tablets of 500mg paracetamol a day.",
    "Ibuprofen 400 mg three times a day with food.",
    "Ibuprofen 800 mg QID is the prescription maximum.",
    "Take methotrexate 15 mg once weekly, on the same day each week.",
    "Methotrexate 10 mg every Monday.",
    "Methotrexate 2.5 mg every 12 hours for three doses each week.",
    "Citalopram 40 mg daily.",
    "Adults: diphenhydramine 50 mg at night.",
    "Children: give ibuprofen 10 mg/kg every 8 hours.",
    "Digoxin 250 micrograms daily.",
    "Paracetamol 1 g, ibuprofen 400 mg, both with food.",
    # routes, concentrations, drugs the table leaves out, no drug at all
    "Ondansetron 32 mg IV over 15 minutes.",
    "Apply diclofenac gel 4 g four times a day.",
    "Paracetamol level 150 mg/L at 4 hours.",
    "Warfarin 20 mg tonight.",
    "Take metformin with meals. Eat at least 50 g of carbohydrate at breakfast.",
    "With digoxin, take magnesium 400 mg daily.",
    "Take 2 g every 4 hours.",
]


def check(text: str, request_text: str = "") -> list[Finding]:
    return CHECK(text, Context(request_text=request_text))


@pytest.mark.parametrize(("text", "number", "drug", "limit", "population", "dose_mg"), OVERDOSES)
def test_overdose_is_a_finding(text: str, number: str, drug: str, limit: str, population: str, dose_mg: float) -> None:
    findings = check(text)
    assert len(findings) == 1, findings
    finding = findings[0]
    assert finding.check == "dose_above_max"
    assert finding.detail["drug"] == drug
    assert finding.detail["limit"] == limit
    assert finding.detail["population"] == population
    assert finding.detail["dose_mg"] == pytest.approx(dose_mg)
    assert finding.detail["dose_mg"] > finding.detail["limit_mg"] or limit == "weekly_only"
    assert number in text[finding.start : finding.end]


@pytest.mark.parametrize("text", NOT_FINDINGS)
def test_limit_statements_and_safe_doses_pass(text: str) -> None:
    assert check(text) == []


def test_span_runs_from_the_drug_to_the_frequency() -> None:
    text = "For your headache, ibuprofen 800 mg every 4 hours is fine. Rest well."
    (finding,) = check(text)
    assert text[finding.start : finding.end] == "ibuprofen 800 mg every 4 hours"


def test_span_covers_a_drug_named_after_the_dose() -> None:
    text = "Then 1.5 grams of Tylenol, with water."
    (finding,) = check(text)
    assert text[finding.start : finding.end] == "1.5 grams of Tylenol"


def test_detail_holds_only_table_names_and_numbers() -> None:
    (finding,) = check("My friend Jane said to take 3 g of Tylenol at once.")
    assert set(finding.detail) == DETAIL_KEYS
    assert finding.detail == {
        "drug": "paracetamol",
        "dose_mg": 3000.0,
        "limit_mg": 1000.0,
        "limit": "single_dose",
        "population": "adult",
    }


def test_child_in_the_request_selects_paediatric_caps() -> None:
    answer = "Give diphenhydramine 50 mg at bedtime."
    (finding,) = check(answer, request_text="My 4-year-old can't sleep")
    assert finding.detail["population"] == "paediatric"
    assert finding.detail["limit_mg"] == 25
    assert check(answer, request_text="I am 40 and I can't sleep") == []


def test_an_adult_cue_wins_over_a_child_cue() -> None:
    assert check("Adults and children over 12: diphenhydramine 50 mg at night.") == []


def test_one_finding_per_dose_statement_in_order() -> None:
    text = "Take 2 g of paracetamol now.\n\nLater, ibuprofen 1200 mg with food, and paracetamol 1 g at night."
    findings = check(text)
    assert [f.detail["drug"] for f in findings] == ["paracetamol", "ibuprofen"]
    assert findings[0].end <= findings[1].start


def test_a_drug_named_in_the_sentence_before_applies() -> None:
    (finding,) = check("Paracetamol is safe for most people.\nTake 2 g now.")
    assert finding.detail["drug"] == "paracetamol"
    assert check("Paracetamol is safe for most people.\n\nTake 2 g now.") == []  # another paragraph


def test_no_quantity_or_no_drug_is_fast_and_empty() -> None:
    assert check("Rest, drink fluids and see your GP if it gets worse.") == []
    assert check("Paracetamol helps with fever.") == []


def test_a_300_word_answer_takes_well_under_a_millisecond() -> None:
    sentence = "For pain, paracetamol 1 g every 6 hours and ibuprofen 400 mg three times a day are usual doses. "
    filler = "Rest, drink plenty of fluids and see your doctor if the pain gets worse or lasts more than a week. "
    answer = (sentence + filler * 3) * 4  # about 300 words, 8 dose statements
    assert 250 <= len(answer.split()) <= 350
    per_call = min(timeit.repeat(lambda: check(answer), number=50, repeat=3)) / 50
    assert per_call < 0.005  # measured about 0.3 ms; the bound catches a regex gone quadratic, not noise


# ---- the table ---------------------------------------------------------------------------------------------


def test_shipped_table_is_valid_with_provenance() -> None:
    table = default_table()
    assert table is default_table()  # loaded once
    assert len(table.drugs) >= 40
    for drug in table.drugs:
        assert drug.source and all(re.search(r"https://", s) for s in drug.source), drug.name
        assert drug.checked == "2026-11"
    names = {d.name for d in table.drugs}
    assert {"paracetamol", "ibuprofen", "methotrexate", "citalopram"} <= names
    assert {"insulin", "fentanyl", "warfarin"} <= {o.name for o in table.omitted}
    methotrexate = next(d for d in table.drugs if d.name == "methotrexate")
    assert methotrexate.frequency == "weekly"


BROKEN = [
    ("adult: {max_single: 800, max_daily: 3200}", "adult: {max_single: -800, max_daily: 3200}", "'ibuprofen'",
     "adult.max_single"),
    ("    confidence: high\n    note: \"Prescription", "    confidnce: high\n    note: \"Prescription", "'ibuprofen'",
     "confidnce"),
    ("synonyms: [advil,", "synonyms: [tylenol, advil,", "'tylenol'", "'paracetamol'"),
    ("frequency: weekly\n    adult: {max_single: 30}", "frequency: weekly\n    adult: {max_daily: 30}",
     "'methotrexate'", "weekly"),
    ("  - name: amlodipine\n", "  - name: Amlodipine\n", "'Amlodipine'", "key name"),
    ("    checked: \"2026-11\"\n    confidence: high\n\n  - name: amlodipine",
     "    checked: \"Nov 2026\"\n    confidence: high\n\n  - name: amlodipine", "'lisinopril'", "key checked"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "entry", "key"), BROKEN)
def test_invalid_table_names_the_entry_and_key(tmp_path: Path, old: str, new: str, entry: str, key: str) -> None:
    shipped = TABLE_PATH.read_text(encoding="utf-8")
    assert shipped.count(old) == 1
    path = tmp_path / "max_doses.yaml"
    path.write_text(shipped.replace(old, new), encoding="utf-8")
    with pytest.raises(DoseTableError) as error:
        load_table(path)
    assert str(path) in str(error.value)
    assert entry in str(error.value)
    assert key in str(error.value)


def test_broken_yaml_is_a_table_error(tmp_path: Path) -> None:
    path = tmp_path / "max_doses.yaml"
    path.write_text("version: 1\ndrugs: [\n", encoding="utf-8")
    with pytest.raises(DoseTableError, match="not valid YAML"):
        load_table(path)


def test_a_custom_table_in_micrograms(tmp_path: Path) -> None:
    path = tmp_path / "table.yaml"
    path.write_text(
        "version: 1\ndrugs:\n  - name: levothyroxine\n    synonyms: [synthroid]\n    unit: mcg\n"
        "    adult: {max_single: 300, max_daily: 300}\n    source: ['test']\n    checked: '2026-11'\n"
        "    confidence: review\n",
        encoding="utf-8",
    )
    custom = DoseCheck(load_table(path))
    (finding,) = custom("Synthroid 0.5 mg every morning.", Context())
    assert finding.detail == {
        "drug": "levothyroxine",
        "dose_mg": 0.5,
        "limit_mg": 0.3,
        "limit": "single_dose",
        "population": "adult",
    }
    assert custom("Levothyroxine 100 mcg every morning.", Context()) == []


# ---- written as an attacker would, or as correct text that must pass (issue: false blocks)


@pytest.mark.parametrize(
    "text",
    [
        "Take 30\u200b00 mg of acetaminophen every 4 hours.",
        "Take 3000 mg of \u0430cetaminophen every 4 hours.",  # a Cyrillic a
        "Take 3 0 0 0 mg of acetaminophen every 4 hours.",
        "Take \uff13\uff10\uff10\uff10\uff4d\uff47 of acetaminophen every 4 hours.",
        "Take fifteen grams of paracetamol.",
        "Take 30 paracetamol 500 mg tablets at once.",
        "Acetaminophen is the drug. It works well. Many use it. Take 3000 mg every 4 hours.",
    ],
)
def test_an_overdose_written_to_slip_past_is_found(text: str) -> None:
    assert checked(DoseCheck(), normal(text), Context()), text


@pytest.mark.parametrize(
    "text",
    [
        "For community-acquired pneumonia: doxycycline 200 mg on day one then 100 mg daily, or clarithromycin "
        "500 mg twice daily for 5 days.",
        "Ibuprofen 400 mg three times a day, and omeprazole 20 mg daily to protect the stomach.",
        "Paracetamol 1 g four times a day; if the pain persists, add codeine. Amoxicillin 500 mg three times daily.",
    ],
)
def test_a_dose_belongs_to_the_drug_written_with_it(text: str) -> None:
    assert checked(DoseCheck(), normal(text), Context()) == [], text
