"""The one retry policy of every outbound model call: client traffic, probes, re-asks and judge models.

Retried on the same upstream: 408, 409, 429 and 5xx answers (the statuses the official OpenAI SDK retries)
and failures to connect or to read, with exponential backoff and full jitter; an upstream's Retry-After in
seconds is honoured up to the backoff ceiling. A timeout is not retried on the same upstream: it would
double the wait; the call moves on to its next route, and a call without one fails. An answer that names a
parameter the server does not support is no transient fault, whatever its status (llama-cpp-python answers 500
to a response_format it lacks): it is answered at once, never retried.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

import orjson

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# What servers say of a request field they lack: FastAPI/pydantic, vLLM, llama.cpp, llama-cpp-python, OpenAI.
UNSUPPORTED = re.compile(
    r"not (?:yet )?supported|unsupported|not implemented|unknown (?:field|parameter|argument)|unrecognized"
    r"|extra (?:inputs|fields) (?:are )?not permitted|not a valid enumeration|input should be '"
    r"|unknown variant|missing field",  # serde (TGI): a tag it does not know, a field its dialect needs
    re.IGNORECASE,
)
ECHO = re.compile(r"[\"']?input[\"']?\s*[:=]", re.IGNORECASE)


def backoff_s(attempt: int, base_ms: int, max_ms: int, retry_after_s: float | None = None) -> float:
    """The wait before retry ``attempt`` (1 for the first): the upstream's Retry-After within ``max_ms``, else
    a uniform draw from the upper half of ``base_ms * 2 ** (attempt - 1)`` capped at ``max_ms``."""
    if retry_after_s is not None:
        return min(retry_after_s, max_ms / 1000)
    ceiling = min(max_ms, base_ms * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling) / 1000


def retry_after_s(headers: Iterable[tuple[bytes, bytes]]) -> float | None:
    """Retry-After in whole seconds from lower-case raw headers; None when absent or an HTTP date."""
    for name, value in headers:
        if name == b"retry-after" and value.strip().isdigit():
            return float(value)
    return None


def unsupported(body: bytes) -> str | None:
    """The server's message when an error answer says a request field is not supported, else None."""
    try:
        error = orjson.loads(body)
    except orjson.JSONDecodeError:
        error = body.decode("utf-8", "replace")  # axum (TGI) answers a body it cannot read in plain text
    message = _message(error.get("error", error) if isinstance(error, dict) else error)
    found = UNSUPPORTED.search(message)
    if found is None:
        return None
    # the words around the match, cut before any echo of the request ("input": a server may quote it whole)
    excerpt = ECHO.split(message[max(0, found.start() - 60) : found.end() + 60], maxsplit=1)[0]
    return excerpt.strip(" \t\n,;:{}") or found.group(0)


def _message(error: object) -> str:
    """The words of an error body: OpenAI's ``message``, or FastAPI's ``detail`` (its ``msg`` parts only: the
    ``input`` parts would echo the request, clinical text included)."""
    if isinstance(error, str):
        return error[:500]
    if isinstance(error, dict):
        return _message(error.get("message", error.get("detail", error.get("msg", ""))))
    if isinstance(error, list):
        return "; ".join(_message(item) for item in error)[:500]
    return ""


def transient(status: int, body: bytes) -> bool:
    """Whether an answer with ``status`` is worth trying again."""
    return status in RETRY_STATUSES and unsupported(body) is None
