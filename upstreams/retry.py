"""The one retry policy of every outbound model call: client traffic, probes, re-asks and judge models.

Retried on the same upstream: 408, 409, 429 and 5xx answers (the statuses the official OpenAI SDK retries)
and failures to connect or to read, with exponential backoff and full jitter; an upstream's Retry-After in
seconds is honoured up to the backoff ceiling. A timeout is not retried on the same upstream: it would
double the wait; the call moves on to its next route, and a call without one fails.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


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
