"""The append-only audit log of policy decisions, and their metrics.

One JSON line per decision: when, who (tenant), which request, which model and upstream, which pack and rule,
which stage and action, whether it was enforced or shadowed, and the check's detail (names and numbers from
the check's own tables: never text of the request or the answer). The file is opened for appending only.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditLog:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._file: IO[bytes] | None = None
        self._lock = threading.Lock()

    def record(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = orjson.dumps({"time": round(time.time(), 3), **entry}) + b"\n"
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self.path.open("ab", buffering=0)  # one write per line: nothing lost in a buffer
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class PolicyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "medic_policy_decisions", "Policy rule decisions, by rule, stage, action and mode (enforced or shadow).",
            ["rule", "stage", "action", "mode"], registry=registry,
        )  # fmt: skip
        self.model_state = Gauge(
            "medic_policy_model_state", "1 while a results rule holds the model in this state (degraded, "
            "fallback, review), else 0.", ["model", "state"], registry=registry,
        )  # fmt: skip
        self.transitions = Counter(
            "medic_policy_transitions", "Model state changes made by results rules, by rule and the state entered or "
            "left.", ["model", "rule", "state", "direction"], registry=registry,
        )  # fmt: skip
