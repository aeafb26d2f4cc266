"""Requests checked before they are forwarded: chat completions, completions and embeddings bodies against OpenAI's
own request schemas (protocol/openai_requests.json, generated from OpenAI's OpenAPI document by
scripts/openai-request-schema), compiled once to Python by fastjsonschema.

A body that breaks the schema is answered as OpenAI answers it: a 400 ``invalid_request_error`` naming the
``param`` (``messages[0].role``, ``stream``) and what was wrong, never echoing the value (it may be clinical text).
Fields the schema does not name (a server's own extensions: vLLM's ``guided_json``, ``top_k``...) pass through, as
the schema allows them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import orjson

from protocol.errors import InvalidRequest

Validator = Callable[[Any], Any]
_INDEX = re.compile(r"\.(\d+)(?=\.|$)")
_WHAT = re.compile(r"^data(?:\.\S*|\[\d+\]\S*)? (?P<what>(?:must|cannot) .*)$")


@cache
def _schema() -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads(resources.files("protocol").joinpath("openai_requests.json").read_bytes())
    return loaded


def schema_document() -> dict[str, Any]:
    """A copy of the request schemas (roots, the message schemas by role, their definitions)."""
    copied: dict[str, Any] = orjson.loads(orjson.dumps(_schema()))
    return copied


@cache
def validator(operation: str) -> Validator:
    """The compiled check of one operation's body ("chat", "completions", "embeddings")."""
    return _compiled(_schema()["roots"][operation])


@cache
def message_validator(role: str) -> Validator:
    """The compiled check of a chat message of ``role`` (a role the request's schema admits)."""
    return _compiled(_schema()["messages"][role])


def _compiled(reference: dict[str, str]) -> Validator:
    schema = _schema()
    compiled: Validator = fastjsonschema.compile(
        {"$schema": schema["$schema"], "definitions": schema["definitions"], **reference}
    )
    return compiled


def warm_validators() -> None:
    """Compiles every validator now (about 0.2 s), so that no request waits for it."""
    for operation in _schema()["roots"]:
        validator(operation)
    for role in _schema()["messages"]:
        message_validator(role)


def check(operation: str, payload: dict[str, Any]) -> None:
    """Raises InvalidRequest (OpenAI's 400, with ``param``) when ``payload`` breaks the operation's schema."""
    try:
        validator(operation)(payload)
    except fastjsonschema.JsonSchemaValueException as error:
        raise _invalid(error) from None
    if operation != "chat":
        return
    roles = _schema()["messages"]
    for i, message in enumerate(payload["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if not isinstance(role, str) or role not in roles:
            param = f"messages[{i}]" + (".role" if isinstance(message, dict) else "")
            what = f"must be one of {sorted(roles)}" if isinstance(message, dict) else "must be object"
            raise InvalidRequest(f"Invalid '{param}': it {what}.", param=param, code="invalid_value")
        try:
            message_validator(role)(message)
        except fastjsonschema.JsonSchemaValueException as error:
            raise _invalid(error, ["messages", str(i)]) from None


def _invalid(error: fastjsonschema.JsonSchemaValueException, within: list[str] | None = None) -> InvalidRequest:
    path = (within or []) + [str(p) for p in (error.path or [])[1:]]  # the first element is "data"
    param = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path).lstrip(".") or None
    found = _WHAT.match(error.message or "")
    what = found.group("what") if found else "is not valid"
    what = what.replace("cannot be validated by any definition", "is not of an accepted type or in range")
    rule = error.rule or ""
    code = "invalid_type" if rule == "type" else "invalid_value"
    where = f"'{param}'" if param else "the request body"
    return InvalidRequest(f"Invalid {where}: it {what}.", param=param, code=code)
