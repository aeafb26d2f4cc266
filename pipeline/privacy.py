"""PHI protection for sampled exchanges before they leave the gateway: pseudonymisation or encryption.

``pseudonymise(sample)`` replaces identifiers in the clinical text of a sample (the shape of
``pipeline.sample.Sample.model_dump()``) with typed placeholders such as ``[NAME_1]``, ``[MRN_1]`` or ``[DATE_2]``.
Within one sample the same original maps to the same placeholder everywhere, request and response alike, so a
judge can still see that the answer repeats the patient's name or a date from the question. Placeholders are
numbered per sample and mean nothing across samples.

``encrypt(sample, key)`` moves ``request`` and ``response`` into a Fernet token instead; ``decrypt`` reverses
it. ``load_key(env_name)`` reads the Fernet key from the environment.

Text covered: in ``request``, ``messages[].content`` (a string, or the ``text`` of each content part), the
string values inside ``messages[].tool_calls[].function.arguments`` (and the legacy ``function_call``),
``prompt`` and ``input`` (a string or a list of strings); in ``response``, ``choices[].content`` and the
choices' tool calls (also inside a ``message`` or ``delta`` object, where a choice has one). Nothing else is
touched: model, parameters, roles, tool names, ids and the message ``name`` field pass through as they are.

Detected (regular expressions, each documented with an example where it is defined below): e-mail addresses;
phone and fax numbers; record, account, encounter, insurance and similar ids when a label introduces them, and
bare SSNs; dates (numeric, written out, month and year, labelled dates of birth), never durations or ages;
street addresses, "City, ST 12345" and labelled addresses; URLs and IP addresses; person names after a title
or a label, or right before a "DOB"/"MRN"/"a 65-year-old" context; ages over 89 (``[AGE_90+]``, HIPAA). Once a
name is found, its other occurrences in the sample (the full name, the last name alone, the first name alone)
become the same placeholder; names that share a last name share a placeholder.

Known limits, stated plainly: this is pattern matching, not understanding.
- A name with no title, label or context (``"Jane said her knee hurts"``) is missed unless the same name was
  found elsewhere in the sample. Lower-case names are missed. A model-based recogniser comes with the safety
  checks later; until then pseudonymised text is *reduced*, not guaranteed free of identifiers.
- A label or title followed by a capitalised non-name (``"Attending: Cardiology Team"``, ``"Dr Smith Aspirin"``)
  is taken as a name, and every capitalised occurrence of those words in the sample is then replaced too
  (capitalised words with common generic-drug endings such as "-formin" or "-pril" are never name words).
- The message ``name`` field and the request's ``user`` field are left alone, as the contract says, although
  a client could put a person's name there.
- Cities are only caught before a state code and ZIP; hospital names, employers, relatives' names without a
  label, free-text ids without a label and unusual date formats are missed.
- Over-redaction is preferred to leaks: overlapping detections merge into one placeholder.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from text.identifiers import PLACEHOLDER, RANK, Span, matches, resolve, trim

__all__ = ["PrivacyError", "decrypt", "encrypt", "load_key", "pseudonymise"]


class PrivacyError(Exception):
    """A sample could not be protected or unprotected: bad key, tampered token, wrong state. Never holds PHI."""


def _squash(value: str) -> str:
    return " ".join(value.split())


def _name_words(name: str) -> list[str]:
    """The words of a name without initials: "J. Smith" -> ["Smith"]."""
    return [word for word in name.split() if not word.endswith(".") and len(word) > 1]


def _key(kind: str, value: str) -> str:
    """What makes two detections the same identifier: "(555) 123-4567" and "555.123.4567" are one phone."""
    if kind == "PHONE":
        return "".join(ch for ch in value if ch.isdigit())
    if kind in ("MRN", "SSN", "ID"):
        return "".join(ch for ch in value if ch.isalnum()).upper()
    if kind == "NAME":
        words = _name_words(value)
        return (words[-1] if words else value).casefold()
    return _squash(value).casefold()


def _json_hint(key: str) -> str | None:
    """The identifier kind a JSON key announces ("patient_name", "dateOfBirth"), if any."""
    return _KEY_KINDS.get("".join(ch for ch in key.lower() if ch.isalnum()))


# JSON keys (lower case, letters and digits only) whose whole string value is an identifier of that kind.
# A plain "name" is not among them: tool arguments name drugs, tests and files far more often than people.
_KEY_KINDS = {
    **dict.fromkeys(
        (
            "patient",
            "patientname",
            "fullname",
            "firstname",
            "lastname",
            "givenname",
            "familyname",
            "surname",
            "middlename",
        ),
        "NAME",
    ),
    **dict.fromkeys(("mrn", "medicalrecordnumber", "recordnumber", "patientid"), "MRN"),
    **dict.fromkeys(("ssn", "socialsecuritynumber"), "SSN"),
    **dict.fromkeys(("dob", "dateofbirth", "birthdate", "birthday"), "DATE"),
    **dict.fromkeys(("email", "emailaddress"), "EMAIL"),
    **dict.fromkeys(("phone", "phonenumber", "telephone", "mobile", "cell", "fax"), "PHONE"),
    **dict.fromkeys(("address", "streetaddress", "homeaddress", "zip", "zipcode", "postalcode"), "ADDRESS"),
}

Visit = Callable[[str, str | None], str]


class _Pseudonymiser:
    """Per-sample state. ``collect`` is called on every covered text first (detection, name registry,
    placeholders already present); ``replace`` then rewrites each text with placeholders numbered in order
    of first appearance."""

    def __init__(self) -> None:
        self._spans: dict[tuple[str | None, str], list[Span]] = {}
        self._names: dict[str, str] = {}  # a name form as written -> its group (last name, case-folded)
        self._numbers: dict[str, int] = {}  # per kind: the last number used
        self._placeholders: dict[tuple[str, str], str] = {}
        self._bare: re.Pattern[str] | None = None

    def collect(self, text: str, hint: str | None) -> str:
        """Detect identifiers in ``text`` and remember them; returns ``text`` unchanged."""
        key = (hint, text)
        if key not in self._spans:
            self._spans[key] = self._hinted(text, hint) if hint else self._detect(text)
        return text

    def replace(self, text: str, hint: str | None) -> str:
        """``text`` with its identifiers, and the bare occurrences of every name found, as placeholders."""
        spans = self._spans.get((hint, text))
        if spans is None:  # not collected: the walk visits the same texts twice, but stay safe regardless
            spans = self._spans[(hint, text)] = self._hinted(text, hint) if hint else self._detect(text)
        if self._bare is not None:
            spans = resolve(spans + self._bare_spans(text))
        return self._substitute(text, spans)

    def finish_collecting(self) -> None:
        """Build the matcher of bare name occurrences from every name found, longest form first."""
        if self._names:
            forms = sorted(self._names, key=len, reverse=True)
            alternatives = "|".join(r"\s+".join(map(re.escape, form.split())) for form in forms)
            self._bare = re.compile(rf"(?<![\w\[])(?:{alternatives})(?![\w\]])")

    def _detect(self, text: str) -> list[Span]:
        blocked = []
        for match in PLACEHOLDER.finditer(text):
            blocked.append(match.span())
            if match["n"] is not None:
                self._numbers[match["kind"]] = max(self._numbers.get(match["kind"], 0), int(match["n"]))
        spans = [s for s in matches(text) if not any(s.start < end and start < s.end for start, end in blocked)]
        for span in spans:
            if span.kind == "NAME":
                self._register(text[span.start : span.end])
        return resolve(spans)

    def _hinted(self, text: str, kind: str) -> list[Span]:
        """The whole value is an identifier of ``kind`` (a JSON value under a key such as "dob")."""
        start, end = trim(text, 0, len(text))
        if start == end or PLACEHOLDER.fullmatch(text[start:end]):
            return []
        if kind == "NAME":
            self._register(text[start:end])
        return [Span(start, end, kind, 0)]

    def _register(self, name: str) -> None:
        """Remember a name's forms for its bare occurrences: the full name, the last and the first name."""
        words = _name_words(name)
        if not words:
            return
        group = words[-1].casefold()
        forms = {_squash(name), words[-1], words[0]} if len(words[0]) > 2 else {_squash(name), words[-1]}
        for form in forms:
            self._names.setdefault(form, group)
            self._names.setdefault(form.upper(), group)

    def _bare_spans(self, text: str) -> list[Span]:
        assert self._bare is not None
        rank = len(RANK) + 1  # a detection of the same extent types the span, not the bare name
        return [Span(m.start(), m.end(), "NAME", rank) for m in self._bare.finditer(text)]

    def _substitute(self, text: str, spans: list[Span]) -> str:
        if not spans:
            return text
        pieces = []
        position = 0
        for span in spans:
            pieces.append(text[position : span.start])
            pieces.append(self._placeholder(span.kind, text[span.start : span.end]))
            position = span.end
        pieces.append(text[position:])
        return "".join(pieces)

    def _placeholder(self, kind: str, value: str) -> str:
        if kind == "AGE":
            return "[AGE_90+]"  # HIPAA's aggregate category: the age itself is the identifier, not a person
        key = (
            (kind, self._names.get(_squash(value)) or _key(kind, value))
            if kind == "NAME"
            else (kind, _key(kind, value))
        )
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            self._numbers[kind] = self._numbers.get(kind, 0) + 1
            placeholder = self._placeholders[key] = f"[{kind}_{self._numbers[kind]}]"
        return placeholder


def _visit_json(value: Any, visit: Visit, hint: str | None) -> Any:
    """A JSON value with its strings visited; a key such as "dob" makes its value an identifier outright."""
    if isinstance(value, str):
        return visit(value, hint)
    if isinstance(value, int) and not isinstance(value, bool) and hint is not None:
        visited = visit(str(value), hint)
        return value if visited == str(value) else visited
    if isinstance(value, list):
        return [_visit_json(item, visit, hint) for item in value]
    if isinstance(value, dict):
        return {key: _visit_json(item, visit, _json_hint(key)) for key, item in value.items()}
    return value


def _visit_arguments(arguments: str, visit: Visit) -> str:
    """Tool-call arguments: a JSON string whose string values are visited; the result is still JSON.
    Arguments that are not JSON (a truncated stream) are visited as plain text."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return visit(arguments, None)
    visited = _visit_json(parsed, visit, None)
    return arguments if visited == parsed else json.dumps(visited, ensure_ascii=False)


def _visit_calls(message: dict[str, Any], visit: Visit) -> None:
    calls = message.get("tool_calls")
    functions = [call.get("function") for call in calls if isinstance(call, dict)] if isinstance(calls, list) else []
    functions.append(message.get("function_call"))
    for function in functions:
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = _visit_arguments(function["arguments"], visit)


def _visit_message(message: dict[str, Any], visit: Visit) -> None:
    """A chat message or a response choice, in place: its content and its tool calls' arguments."""
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = visit(content, None)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                part["text"] = visit(part["text"], None)
    _visit_calls(message, visit)


def _visit_texts(value: Any, visit: Visit) -> Any:
    """``prompt`` or ``input``: a string or a list of strings (token-id lists pass through)."""
    if isinstance(value, str):
        return visit(value, None)
    if isinstance(value, list):
        return [visit(item, None) if isinstance(item, str) else item for item in value]
    return value


def _visit_sample(sample: dict[str, Any], visit: Visit) -> None:
    """Every covered text of ``sample``, in place, request before response."""
    request = sample.get("request")
    if isinstance(request, dict):
        messages = request.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict):
                _visit_message(message, visit)
        for field in ("prompt", "input"):
            if field in request:
                request[field] = _visit_texts(request[field], visit)
    response = sample.get("response")
    choices = response.get("choices") if isinstance(response, dict) else None
    for choice in choices if isinstance(choices, list) else []:
        if isinstance(choice, dict):
            _visit_message(choice, visit)
            for nested in ("message", "delta"):
                if isinstance(choice.get(nested), dict):
                    _visit_message(choice[nested], visit)


def pseudonymise(sample: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a sample dict (the shape of pipeline.sample.Sample.model_dump()) whose identifiers are
    replaced by typed placeholders, consistently across the request and the response: the same original
    string maps to the same placeholder everywhere in this sample (e.g. "[NAME_1]", "[MRN_1]", "[DATE_2]"),
    so judges can still compare request and response. Sets sample["privacy"] = "pseudonymised".

    The input is not modified. Idempotent: placeholders already present are left alone and their numbers
    are not reused. Raises PrivacyError for an encrypted sample (there is no clear text to work on)."""
    if sample.get("privacy") == "encrypted":
        raise PrivacyError("cannot pseudonymise an encrypted sample; decrypt it first")
    result: dict[str, Any] = _copy(sample)
    state = _Pseudonymiser()
    _visit_sample(result, state.collect)  # collect changes nothing: the walk only needs to see every text
    state.finish_collecting()
    _visit_sample(result, state.replace)
    result["privacy"] = "pseudonymised"
    return result


def _copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, strings, numbers): copy.deepcopy's result at a fifth of its
    cost, since nothing in a sample can refer to itself. Anything else is handed to copy.deepcopy."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    return copy.deepcopy(value)


# --- encryption -----------------------------------------------------------------------------------------


def _fernet(key: bytes) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise PrivacyError("not a valid Fernet key (32 url-safe base64-encoded bytes)") from None


def encrypt(sample: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Copy with "request" and "response" moved into sample["ciphertext"] (a Fernet token of their JSON),
    request={} and response={} left behind, privacy="encrypted".

    The token's plaintext is ``{"request": ..., "response": ...}``. The input is not modified. Raises
    PrivacyError for a malformed key, a sample already encrypted (its ciphertext would be lost) or content
    that is not JSON."""
    if sample.get("privacy") == "encrypted" or sample.get("ciphertext") is not None:
        raise PrivacyError("sample is already encrypted")
    fernet = _fernet(key)
    try:
        plaintext = json.dumps({"request": sample.get("request", {}), "response": sample.get("response", {})})
    except (TypeError, ValueError):
        raise PrivacyError("sample content is not JSON-serialisable") from None
    result = copy.deepcopy({k: v for k, v in sample.items() if k not in ("request", "response")})
    result.update(request={}, response={}, ciphertext=fernet.encrypt(plaintext.encode()).decode(), privacy="encrypted")
    return result


def decrypt(sample: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The inverse: request and response restored, ciphertext None; raises PrivacyError on a wrong key or a
    tampered token.

    The token does not record how the text was treated before encryption, so the result says
    privacy="raw": it must be handled as PHI unless the caller knows it was pseudonymised first."""
    token = sample.get("ciphertext")
    if not isinstance(token, str):
        raise PrivacyError("sample has no ciphertext")
    try:
        plaintext = _fernet(key).decrypt(token.encode())
    except InvalidToken:
        raise PrivacyError("ciphertext does not verify: wrong key or tampered token") from None
    content = json.loads(plaintext)
    if not isinstance(content, dict) or not {"request", "response"} <= content.keys():
        raise PrivacyError("decrypted content is not a sample's request and response")
    result = copy.deepcopy(sample)
    result.update(request=content["request"], response=content["response"], ciphertext=None, privacy="raw")
    return result


def load_key(env_name: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) in environment variable ``env_name``. Raises PrivacyError
    naming the variable, never its value, when it is unset, empty or malformed."""
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise PrivacyError(f"{env_name} is not set: it must hold a Fernet key")
    key = value.encode()
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise PrivacyError(f"{env_name} does not hold a valid Fernet key (32 url-safe base64-encoded bytes)") from None
    return key
