"""Structured output in the dialects the engines people run speak, and the check of what comes back.

A judge asks for JSON that follows a schema. OpenAI, vLLM, llama.cpp's server and Ollama take it as
``response_format: {type: json_schema, json_schema: {name, schema, strict}}``; llama-cpp-python's server
takes ``{type: json_object, schema}`` and answers 500 to json_schema; Hugging Face's TGI takes
``{type: json_object, value}`` ("json_value" here) and answers 422 to the others; vLLM before 0.10 also took the
schema as the extra parameter ``guided_json``. ``judging.llm.structured_output`` names one, or ``auto`` tries them in
the order of DIALECTS and keeps the first the endpoint accepts. Whatever the dialect, the reply is checked
against the schema (an engine that ignores the request returns free text).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator

Dialect = Literal["json_schema", "json_object", "json_value", "guided_json"]
# guided_json last: a server that ignores unknown fields (TGI) takes it and then writes free text
DIALECTS: tuple[Dialect, ...] = ("json_schema", "json_object", "json_value", "guided_json")


def request_fields(dialect: Dialect, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The request fields that ask for JSON following ``schema`` in ``dialect``."""
    if dialect == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema,
                                                                             "strict": True}}}  # fmt: skip
    if dialect == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if dialect == "json_value":
        return {"response_format": {"type": "json_object", "value": schema}}
    return {"guided_json": schema}


def mismatch(text: str, schema: dict[str, Any]) -> str | None:
    """Why ``text`` is not JSON following ``schema`` (the first error, no content), or None when it is."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "not JSON"
    error = next(iter(_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.validator} {error.validator_value!r}"[:200]


@lru_cache(maxsize=64)
def _validator(schema: bytes) -> Draft202012Validator:
    """One compiled validator per schema (judges reuse a few schemas for every call)."""
    return Draft202012Validator(orjson.loads(schema))
