"""Bounding the calls a probe makes to a monitored model: so many at once, and so many starts a second."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class Limiter:
    """At most ``concurrency`` calls at once, and call starts spaced 1 / ``max_rps`` seconds apart."""

    def __init__(self, concurrency: int, max_rps: float) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._spacing = 1.0 / max_rps if max_rps > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def run(self, call: Any) -> Any:
        async with self._slots:
            async with self._lock:
                wait = self._next - time.monotonic()
                self._next = max(self._next, time.monotonic()) + self._spacing
            if wait > 0:
                await asyncio.sleep(wait)
            return await call
