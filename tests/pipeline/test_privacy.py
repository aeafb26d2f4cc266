"""Pseudonymisation and encryption of sampled exchanges: identifiers out, clinical content intact."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from cryptography.fernet import Fernet

from pipeline.privacy import PrivacyError, decrypt, encrypt, load_key, pseudonymise
from pipeline.sample import Sample

NOTE = """\
Patient: Jane Roe    MRN: 00482913    DOB: 03/14/1950
Address: 12 Oak Street, Springfield, IL 62704. Phone (217) 555-0143. Email jane.roe@example.org
Jane Roe is a 65-year-old woman with left knee pain for 3 days after a fall on Jan 2, 2024.
Meds: Metformin 500 mg twice daily, warfarin 5 mg. INR 2.4, K 4.1 mmol/L, HbA1c 7.4%, BP 120/80.
Seen by Dr. Alan Smith. Her mother, a 94-year-old, lives at 221B Baker Street.
Referring physician: Amy Wu. Insurance ID: XZ-99812. Portal https://portal.example.org/p/8812 from 10.2.33.14.
"""
REPLY = "Mrs. Roe (DOB 03/14/1950): the fall on Jan 2, 2024 and 3 days of pain suggest a sprain. Ms Roe, rest."

IDENTIFIERS = [
    "Jane",
    "Roe",
    "00482913",
    "03/14/1950",
    "12 Oak Street",
    "Springfield",
    "62704",
    "555-0143",
    "jane.roe@example.org",
    "Jan 2, 2024",
    "Alan",
    "Smith",
    "94",
    "221B Baker",
    "Amy",
    "Wu",
    "XZ-99812",
    "portal.example.org",
    "10.2.33.14",
]
CLINICAL = [
    "65-year-old woman",
    "left knee pain for 3 days",
    "Metformin 500 mg twice daily",
    "warfarin 5 mg",
    "INR 2.4, K 4.1 mmol/L, HbA1c 7.4%, BP 120/80",
    "a sprain",
]


def sample(request: dict[str, Any], *choices: dict[str, Any]) -> dict[str, Any]:
    fields = {
        "request_id": "req-1",
        "model": "clinical",
        "privacy": "raw",
        "request": request,
        "response": {"choices": list(choices), "model": "m"},
    }
    return Sample.model_validate(fields).model_dump()


def chat(*contents: Any, reply: str = "") -> dict[str, Any]:
    messages = [{"role": "user", "content": content} for content in contents]
    return sample({"model": "clinical", "temperature": 0.2, "messages": messages}, {"index": 0, "content": reply})


def text(content: str) -> str:
    """The pseudonymised form of one user message."""
    result: str = pseudonymise(chat(content))["request"]["messages"][0]["content"]
    return result


def placeholder(kind: str, in_text: str) -> str:
    found = re.findall(rf"\[{kind}_\d+\]", in_text)
    assert found, f"no {kind} placeholder in {in_text!r}"
    return str(found[0])


# --- the whole note -------------------------------------------------------------------------------------


def test_clinical_note_loses_every_identifier_and_keeps_placeholders_consistent() -> None:
    result = pseudonymise(chat(NOTE, reply=REPLY))
    dumped = json.dumps([result["request"], result["response"]])  # not ids or timestamps: "94" may be in those
    for identifier in IDENTIFIERS:
        assert identifier not in dumped, identifier
    request = result["request"]["messages"][0]["content"]
    reply = result["response"]["choices"][0]["content"]
    name, dob = placeholder("NAME", request), placeholder("DATE", request)
    fall = re.findall(r"\[DATE_\d+\]", request)[1]
    assert request.startswith(f"Patient: {name}    MRN: [MRN_1]    DOB: {dob}")
    assert f"{name} is a 65-year-old woman" in request
    assert reply == f"Mrs. {name} (DOB {dob}): the fall on {fall} and 3 days of pain suggest a sprain. Ms {name}, rest."
    assert "a [AGE_90+]-year-old" in request
    for kind in ("EMAIL", "PHONE", "ADDRESS", "URL", "IP", "ID"):
        placeholder(kind, request)
    assert result["privacy"] == "pseudonymised"
    Sample.model_validate(result)


def test_clinical_content_is_kept_verbatim() -> None:
    result = pseudonymise(chat(NOTE, reply=REPLY))
    request = result["request"]["messages"][0]["content"]
    reply = result["response"]["choices"][0]["content"]
    for phrase in CLINICAL:
        assert phrase in request + reply, phrase


@pytest.mark.parametrize(
    "clean",
    [
        "Metformin 500 mg twice daily; warfarin 5 mg; lisinopril 10 mg. INR 2.4, pH 7.4, K 4.1, Na 135-145 mmol/L.",
        "A 65-year-old man with left knee pain for 3 days and fever for 2 weeks; follow up in 6 weeks, on day 14.",
        "BP 120/80, HR 88, SpO2 98% on 2 L, temp 38.5 C, weight 70 kg, BMI 31.2, QTc 480 ms, eGFR 58.",
        "Take 1/2 tablet, 1-2 tablets every 4-6 hours; amoxicillin 250 500 1000 mg; platelets 150 250 1000.",
        "Diagnosis: Parkinson disease, Crohn disease, Hodgkin lymphoma. Right hip fracture, left knee OA. E11.9.",
        "Drug name: Metformin. Patient presents with chest pain. Patient: 65-year-old male. She is aged 65.",
        "Chest Pain is a 3-day history. Signed consent on file. The patient was born in 1950. Stage 3 CKD.",
        "Time 12:30, ratio 1:2, dose 0.5 mg, version 1.2.3, 10/20 vision, 2/3 of the dose, LDL 130 mg/dL.",
    ],
)
def test_text_without_identifiers_is_unchanged(clean: str) -> None:
    assert text(clean) == clean


@pytest.mark.parametrize(
    ("original", "identifier", "kind"),
    [
        ("Write to j.roe+notes@mail.example.co.uk today", "j.roe+notes@mail.example.co.uk", "EMAIL"),
        ("Call (555) 123-4567 after 5", "(555) 123-4567", "PHONE"),
        ("Reach her at 555.123.4567.", "555.123.4567", "PHONE"),
        ("Cell 5551234567 ok", "5551234567", "PHONE"),
        ("Hotline 1-800-555-0199 x204", "1-800-555-0199 x204", "PHONE"),
        ("UK number +44 20 7946 0958 works", "+44 20 7946 0958", "PHONE"),
        ("Ring 020 7946 0958 now", "020 7946 0958", "PHONE"),
        ("Fax: 555 1234 please", "555 1234", "PHONE"),
        ("MR# A1234567 on file", "A1234567", "MRN"),
        ("medical record number 987654 on file", "987654", "MRN"),
        ("Patient ID: P-12345 on file", "P-12345", "MRN"),
        ("SSN 123-45-6789 on file", "123-45-6789", "SSN"),
        ("number 123-45-6789 on file", "123-45-6789", "SSN"),
        ("Encounter #: 889900 closed", "889900", "ID"),
        ("DEA number AB1234563 on file", "AB1234563", "ID"),
        ("NPI 1234567893 on file", "1234567893", "ID"),
        ("member id XZ-99812 active", "XZ-99812", "ID"),
        ("Seen 1/2/2024 and again", "1/2/2024", "DATE"),
        ("Seen 2024-01-02 and again", "2024-01-02", "DATE"),
        ("Seen 02.01.2024 and again", "02.01.2024", "DATE"),
        ("Seen on January 2nd, 2024 and again", "January 2nd, 2024", "DATE"),
        ("Seen on 2 January 2024 and again", "2 January 2024", "DATE"),
        ("Seen in January 2024 and again", "January 2024", "DATE"),
        ("Born DOB: 14031950 here", "14031950", "DATE"),
        (
            "Lives at 1600 Pennsylvania Ave NW, Washington, DC 20500 now",
            "1600 Pennsylvania Ave NW, Washington, DC 20500",
            "ADDRESS",
        ),
        ("Moved to Boston, MA 02115-1234 last year", "Boston, MA 02115-1234", "ADDRESS"),
        ("Home address: 4 Rue de la Paix, Paris\nPlan: rest", "4 Rue de la Paix, Paris", "ADDRESS"),
        ("See www.example.org/records for more", "www.example.org/records", "URL"),
        ("Device at fe80::1 logged", "fe80::1", "IP"),
        ("Seen by Prof. J. Smith today", "J. Smith", "NAME"),
        ("Attending: Dr. Maria Garcia-Lopez\nPlan", "Maria Garcia-Lopez", "NAME"),
        ("Patient named Sean O'Brien arrived", "Sean O'Brien", "NAME"),
        ("Hello, my name is Priya Patel and I have a cough", "Priya Patel", "NAME"),
        ("Electronically signed by: Amy Wu, MD", "Amy Wu", "NAME"),
        ("John Smith (age 70) was admitted", "John Smith", "NAME"),
        ("Lee Kim is a 70-year-old man with gout", "Lee Kim", "NAME"),
    ],
)
def test_identifier_is_replaced_by_its_typed_placeholder(original: str, identifier: str, kind: str) -> None:
    result = text(original)
    assert identifier not in result
    assert result == original.replace(identifier, placeholder(kind, result))


@pytest.mark.parametrize(
    ("original", "expected"),
    [
        ("a 92-year-old woman", "a [AGE_90+]-year-old woman"),
        ("she is 101 years old", "she is [AGE_90+] years old"),
        ("95 y/o M", "[AGE_90+] y/o M"),
        ("aged 94, frail", "aged [AGE_90+], frail"),
        ("a 89-year-old woman", "a 89-year-old woman"),
        ("aged 65", "aged 65"),
    ],
)
def test_ages_over_89_are_aggregated(original: str, expected: str) -> None:
    assert text(original) == expected


def test_found_name_replaces_its_bare_occurrences_everywhere() -> None:
    result = pseudonymise(chat("Roe has pain.", "Patient: Jane Roe", reply="JANE ROE, Jane and Roe; not Roebuck."))
    first, second = (m["content"] for m in result["request"]["messages"])
    reply = result["response"]["choices"][0]["content"]
    assert first == "[NAME_1] has pain."
    assert second == "Patient: [NAME_1]"
    assert reply == "[NAME_1], [NAME_1] and [NAME_1]; not Roebuck."


def test_same_identifier_same_placeholder_different_identifier_new_number() -> None:
    result = text("Call 555-123-4567 or (555) 123-4567, else 555-987-6543. Dates 1/2/2024, 1/2/2024, 3/4/2024.")
    assert result == "Call [PHONE_1] or [PHONE_1], else [PHONE_2]. Dates [DATE_1], [DATE_1], [DATE_2]."


# --- idempotence and the copy ---------------------------------------------------------------------------


def test_pseudonymising_twice_changes_nothing() -> None:
    once = pseudonymise(chat(NOTE, reply=REPLY))
    assert pseudonymise(once) == once


def test_existing_placeholders_keep_their_numbers_and_new_identifiers_get_fresh_ones() -> None:
    result = text("Patient: [NAME_1], MRN: [MRN_1]; visitor Mr. Bob Jones, MRN: 7788990")
    assert result == "Patient: [NAME_1], MRN: [MRN_1]; visitor Mr. [NAME_2], MRN: [MRN_2]"


def test_input_sample_is_not_mutated() -> None:
    original = chat(NOTE, [{"type": "text", "text": "Mr. Bob Jones"}], reply=REPLY)
    before = copy.deepcopy(original)
    result = pseudonymise(original)
    assert original == before
    result["request"]["messages"][1]["content"][0]["text"] = "changed"
    result["timings"]["duration_s"] = 1.0
    assert original == before


def test_encrypted_sample_cannot_be_pseudonymised() -> None:
    with pytest.raises(PrivacyError):
        pseudonymise(encrypt(chat(NOTE), Fernet.generate_key()))


# --- which fields -------------------------------------------------------------------------------------


def test_other_fields_pass_through_untouched() -> None:
    tool = {"type": "function", "function": {"name": "Dr_Smith_lookup", "parameters": {"type": "object"}}}
    request = {
        "model": "Dr. Smith",
        "temperature": 0.3,
        "tools": [tool],
        "user": "Mr. Smith",
        "messages": [{"role": "user", "content": "Mr. Smith", "name": "clinic-7"}],
    }
    result = pseudonymise(sample(request, {"index": 0, "content": "ok", "finish_reason": "stop"}))
    assert result["request"]["messages"][0] == {"role": "user", "content": "Mr. [NAME_1]", "name": "clinic-7"}
    assert {k: v for k, v in result["request"].items() if k != "messages"} == {
        k: v for k, v in request.items() if k != "messages"
    }
    assert result["request_id"] == "req-1"
    assert result["model"] == "clinical"
    assert result["response"]["choices"][0]["finish_reason"] == "stop"


def test_content_parts_text_is_covered_and_other_parts_are_not() -> None:
    parts = [
        {"type": "text", "text": "Patient: Jane Roe, x-ray of the left wrist"},
        {"type": "image_url", "image_url": {"url": "https://images.example.org/Jane-Roe.png"}},
    ]
    result = pseudonymise(chat(parts, reply="Roe: no fracture of the left wrist."))
    text_part, image_part = result["request"]["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Patient: [NAME_1], x-ray of the left wrist"}
    assert image_part == parts[1]
    assert result["response"]["choices"][0]["content"] == "[NAME_1]: no fracture of the left wrist."


def test_tool_call_arguments_are_pseudonymised_and_stay_valid_json() -> None:
    arguments = {
        "patient_name": "Jane Roe",
        "dob": "1950-03-14",
        "mrn": 48291300,
        "note": "Mrs Roe reports pain; phone 555-123-4567",
        "dose_mg": 5,
        "name": "metformin",
        "tags": ["left knee", "seen 1/2/2024"],
    }
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps(arguments)}}
    messages = [
        {"role": "user", "content": "Look up Jane Roe"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"result": "Jane Roe, MRN 48291300"}'},
    ]
    reply_call = {"id": "call_2", "type": "function", "function": {"name": "book", "arguments": '{"surname": "Roe"}'}}
    result = pseudonymise(sample({"messages": messages}, {"index": 0, "content": "", "tool_calls": [reply_call]}))
    user, assistant, tool = result["request"]["messages"]
    function = assistant["tool_calls"][0]["function"]
    assert assistant["tool_calls"][0]["id"] == "call_1"
    assert function["name"] == "lookup"
    assert json.loads(function["arguments"]) == {
        "patient_name": "[NAME_1]",
        "dob": "[DATE_1]",
        "mrn": "[MRN_1]",
        "note": "Mrs [NAME_1] reports pain; phone [PHONE_1]",
        "dose_mg": 5,
        "name": "metformin",
        "tags": ["left knee", "seen [DATE_2]"],
    }
    assert user["content"] == "Look up [NAME_1]"
    assert tool["content"] == '{"result": "[NAME_1], MRN [MRN_1]"}'
    reply_function = result["response"]["choices"][0]["tool_calls"][0]["function"]
    assert json.loads(reply_function["arguments"]) == {"surname": "[NAME_1]"}


def test_arguments_that_are_not_json_are_treated_as_text() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"note": "Mr. Bob Jones'}}
    result = pseudonymise(sample({"messages": [{"role": "assistant", "tool_calls": [call]}]}))
    assert result["request"]["messages"][0]["tool_calls"][0]["function"]["arguments"] == '{"note": "Mr. [NAME_1]'


def test_prompt_and_input_strings_and_lists_are_covered() -> None:
    result = pseudonymise(sample({"prompt": ["Patient: Jane Roe", [101, 202]], "input": "Roe, DOB 1/2/1950"}))
    assert result["request"]["prompt"] == ["Patient: [NAME_1]", [101, 202]]
    assert result["request"]["input"] == "[NAME_1], DOB [DATE_1]"
    result = pseudonymise(sample({"prompt": "Mr. Bob Jones", "input": ["Jones", "knee"]}))
    assert result["request"]["prompt"] == "Mr. [NAME_1]"
    assert result["request"]["input"] == ["[NAME_1]", "knee"]


# --- encryption ---------------------------------------------------------------------------------------


def test_encryption_round_trip() -> None:
    key = Fernet.generate_key()
    original = chat(NOTE, reply=REPLY)
    before = copy.deepcopy(original)
    encrypted = encrypt(original, key)
    assert encrypted["request"] == {}
    assert encrypted["response"] == {}
    assert encrypted["privacy"] == "encrypted"
    assert isinstance(encrypted["ciphertext"], str)
    clear = json.dumps({k: v for k, v in encrypted.items() if k not in ("ciphertext", "created_at", "request_id")})
    assert all(identifier not in clear for identifier in IDENTIFIERS)
    assert "warfarin" not in encrypted["ciphertext"]
    Sample.model_validate(encrypted)
    decrypted = decrypt(encrypted, key)
    assert decrypted["request"] == original["request"]
    assert decrypted["response"] == original["response"]
    assert decrypted["ciphertext"] is None
    assert decrypted["privacy"] == "raw"
    decrypted["privacy"] = original["privacy"]
    assert decrypted == original
    assert original == before  # neither touched its input


def test_decrypt_with_the_wrong_key_fails() -> None:
    encrypted = encrypt(chat(NOTE), Fernet.generate_key())
    with pytest.raises(PrivacyError, match="wrong key or tampered"):
        decrypt(encrypted, Fernet.generate_key())


def test_decrypt_of_a_tampered_token_fails() -> None:
    key = Fernet.generate_key()
    encrypted = encrypt(chat(NOTE), key)
    token = encrypted["ciphertext"]
    middle = len(token) // 2
    encrypted["ciphertext"] = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    with pytest.raises(PrivacyError, match="wrong key or tampered"):
        decrypt(encrypted, key)


def test_encryption_refuses_bad_keys_and_wrong_states() -> None:
    key = Fernet.generate_key()
    with pytest.raises(PrivacyError):
        encrypt(chat(NOTE), b"not-a-key")
    with pytest.raises(PrivacyError):
        encrypt(encrypt(chat(NOTE), key), key)  # the first ciphertext would be lost
    with pytest.raises(PrivacyError):
        decrypt(chat(NOTE), key)  # nothing to decrypt


def test_load_key_reads_a_valid_key(monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv("MEDIC_SAMPLE_KEY", key.decode() + "\n")
    assert load_key("MEDIC_SAMPLE_KEY") == key


def test_load_key_names_an_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDIC_SAMPLE_KEY", raising=False)
    with pytest.raises(PrivacyError, match="MEDIC_SAMPLE_KEY is not set"):
        load_key("MEDIC_SAMPLE_KEY")


@pytest.mark.parametrize("bad", ["c2VjcmV0LXZhbHVlLXRvby1zaG9ydA==", "not base64 at all!!", "x" * 44])
def test_load_key_names_a_malformed_variable_but_never_its_value(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("MEDIC_SAMPLE_KEY", bad)
    with pytest.raises(PrivacyError) as caught:
        load_key("MEDIC_SAMPLE_KEY")
    message = str(caught.value)
    assert "MEDIC_SAMPLE_KEY" in message
    assert bad not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
