"""Progress of long command-line work (evaluate, the probes, validation runs): a tqdm bar with the count and the
rate on a terminal; a plain line every ``every_s`` seconds and at the end otherwise (logs, CI), never a bar's
control characters.

Work that makes model calls through ``upstreams.client.ModelClient`` is counted without plumbing: a command runs
``with shown("probe safety", unit="call"):`` and every call completed in that context (its tasks included)
advances it, through ``upstreams.client.CALL_DONE``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from upstreams.client import CALL_DONE


class Progress:
    def __init__(self, what: str, total: int | None = None, unit: str = "item", stream: TextIO | None = None,
                 every_s: float = 10.0) -> None:  # fmt: skip
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self.said = time.monotonic()
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm  # only where a bar is drawn: `serve` imports this module and never draws one

            self._bar = tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self.said >= self.every_s:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line()

    def _line(self) -> None:
        self.said = time.monotonic()
        seconds = max(1e-9, self.said - self.started)
        of = f"/{self.total}" if self.total else ""
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        print(f"{self.what}: {self.done}{of} {self.unit}s{share}, {self.done / seconds:.1f}/s, {seconds:.0f} s",
              file=self.stream, flush=True)  # fmt: skip


@contextlib.contextmanager
def shown(what: str, total: int | None = None, unit: str = "item") -> Iterator[Progress]:
    """A Progress that the work started in this context (its tasks included) advances; closed at the end."""
    progress = Progress(what, total, unit)
    token = CALL_DONE.set(progress.advance)
    try:
        yield progress
    finally:
        CALL_DONE.reset(token)
        progress.close()
