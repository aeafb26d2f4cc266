"""bench/paraphrase_medec.py without its model: the faithfulness filter, the note rebuilt from a cache, and the
committed cache of paraphrases (every kept one passes the filter)."""

from __future__ import annotations

import json

import pytest

from bench.paraphrase_medec import CACHE, check, load_cache, notes, paraphrased, segments, sentences, versions

ORIGINAL = "She was started on 500 mg of amoxicillin twice daily and has no pain in her left knee."
FAITHFUL = "She was begun on amoxicillin 500 mg twice daily and has no pain in her left knee."


def test_accepts_a_faithful_paraphrase() -> None:
    assert check(ORIGINAL, FAITHFUL) is None
    assert check("Her pulse is 106/min and blood pressure is 102/73 mm Hg.",
                 "Her blood pressure is 102/73 mm Hg and her pulse is 106/min.") is None  # fmt: skip
    assert check("Culture tests indicate Neisseria gonorrhoeae.", "Culture tests reveal Neisseria gonorrhoeae.") is None


@pytest.mark.parametrize(
    ("paraphrase", "reason"),
    [
        ("She was begun on amoxicillin twice daily and has no pain in her left knee.", "numbers"),  # 500 dropped
        ("She was begun on amoxicillin 50 mg twice daily and has no pain in her left knee.", "numbers"),
        ("She was begun on amoxicillin 500 mg twice daily and has pain in her left knee.", "negations"),
        ("She was begun on 500 mg of amoxicillin twice daily and reports pain in her left knee.", "negations"),
        ("She was begun on amoxicillin 500 mg twice daily and has no pain in her right knee.", "left/right"),
        ("She was begun on amoxicillin 500 mg twice daily and has no pain in her knee at all.", "left/right"),
        ("She was begun on 500 mg of an antibiotic twice daily and has no pain in her left knee.", "dropped"),
        ("She was begun on 500 mg of penicillin twice daily and has no pain in her left knee.", "dropped"),
    ],
)
def test_rejects_an_unfaithful_paraphrase(paraphrase: str, reason: str) -> None:
    why = check(ORIGINAL, paraphrase)
    assert why is not None and why.startswith(reason), why


def test_rejects_a_negation_added_where_there_was_none() -> None:
    assert check("The lungs are clear to auscultation bilaterally.",
                 "The lungs are not clear to auscultation bilaterally.") is not None  # fmt: skip


@pytest.mark.parametrize(
    ("paraphrase", "reason"),
    [
        (ORIGINAL, "same"),
        ("Sure! She was begun on amoxicillin 500 mg twice daily and has no pain in her left knee.", "preamble"),
        ("Here is the sentence: she got amoxicillin 500 mg twice daily, no pain in her left knee.", "preamble"),
        ("Amoxicillin 500 mg twice daily; no left knee pain.", "length"),
        ("She was begun on amoxicillin 500 mg twice daily. She has no pain in her left knee at all.", "more than one"),
        ("", "empty"),
        (None, "empty"),
    ],
)
def test_rejects_copies_preambles_and_odd_lengths(paraphrase: str | None, reason: str) -> None:
    why = check(ORIGINAL, paraphrase)
    assert why is not None and why.startswith(reason), why


def test_rejects_a_flipped_polarity_word() -> None:
    why = check("Serum potassium is elevated and the creatinine is normal today.",
                "Serum potassium is elevated and the creatinine is abnormal today.")  # fmt: skip
    assert why is not None


@pytest.mark.parametrize(
    ("original", "paraphrase", "reason"),
    [
        ("A man with possible phantom limb pain comes to the physician.",
         "A man with phantom limb pain visits the physician.", "hedging"),
        ("She has had a sudden loss of vision in her right eye.",
         "She has had a recent loss of vision in her right eye.", "qualifiers"),
        ("He has had burning with urination for the past 3 days.",
         "He has had burning and frequent urination for the past 3 days.", "qualifiers"),
        ("The causal organism is Staphylococcus epidermidis.",
         "The causative organism is Staphylococcus aureus.", "dropped"),
        ("The medial joint line is tender to touch.", "The joint line is sensitive to touch.", "direction"),
        ("He has been \"feeling down\" since his divorce.", "He has been feeling tired since his divorce.", "dropped"),
        ("Her older brother has asthma.", "Her older sibling has asthma.", "qualifiers"),
        ("She has a history of sickle cell disease and cirrhosis.",
         "She has a history of sickle cell anemia and cirrhosis.", "dropped"),
    ],
)  # fmt: skip
def test_rejects_changed_hedges_qualifiers_and_names(original: str, paraphrase: str, reason: str) -> None:
    why = check(original, paraphrase)
    assert why is not None and why.startswith(reason), why


def test_rebuilds_a_note_from_a_cache_keeping_its_lines() -> None:
    note = ("A 24-year-old woman comes to the clinic because of a cough. She has no fever at all today. "
            "Laboratory studies show:\nHemoglobin 11 g/dL\nLeukocyte count 8,000/mm3\n"
            "The lungs are clear to auscultation.  Her mother has asthma and eczema.\n")  # fmt: skip
    cache = {
        "A 24-year-old woman comes to the clinic because of a cough.": {
            "paraphrase": "A woman aged 24 visits the clinic with a cough.",
            "kept": True,
        },
        "She has no fever at all today.": {"paraphrase": "She is fever-free today.", "kept": False, "why": "x"},
        "The lungs are clear to auscultation.": "Auscultation of the lungs is clear.",
        "Hemoglobin 11 g/dL": {"paraphrase": "never used: a list line is not a sentence", "kept": True},
    }
    rebuilt = paraphrased(note, cache)
    assert rebuilt == ("A woman aged 24 visits the clinic with a cough. She has no fever at all today. "
                       "Laboratory studies show:\nHemoglobin 11 g/dL\nLeukocyte count 8,000/mm3\n"
                       "Auscultation of the lungs is clear.  Her mother has asthma and eczema.\n")  # fmt: skip
    assert rebuilt.count("\n") == note.count("\n")
    assert paraphrased(note, {}) == note


def test_segments_join_back_into_every_medec_note() -> None:
    for half in ("tuning", "held-out"):
        for row in notes(half):
            for text in versions(row):
                for line in text.split("\n"):
                    assert "".join(piece for _, piece in segments(line)) == line
                assert paraphrased(text, {}) == text


def test_splits_sentences_but_keeps_list_lines_whole() -> None:
    text = ("He is 5 years old. Dr. Smith saw him on day 2! Was it 3.5 mg? Yes. It hurts in his chest. "
            "There are no organisms. Fine.\nSodium 140 mEq/L\nSerum")  # fmt: skip
    assert sentences(text) == ["He is 5 years old.", "Dr. Smith saw him on day 2!", "Was it 3.5 mg?", "Yes.",
                               "It hurts in his chest.", "There are no organisms.", "Fine."]  # fmt: skip


def test_the_committed_cache_keeps_only_faithful_paraphrases() -> None:
    assert CACHE.is_file(), f"{CACHE} is not there: run bench/paraphrase_medec.py"
    cache = load_cache(CACHE)
    assert cache
    with CACHE.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    assert len(records) == len(cache), "one line per distinct sentence"
    for record in records:
        assert set(record) == {"sentence", "paraphrase", "model", "kept", "why"}
        if record["kept"]:
            assert record["why"] is None
            assert check(record["sentence"], record["paraphrase"]) is None, record
        else:
            assert record["why"], record
