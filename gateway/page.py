"""The evidence page: a read-only view, for a clinical-safety lead, of what the judges and the policies found.

GET /evidence?window=24h       per model and judge method, a scorecard of every indicator over the window (mean
                               with its 95 % interval, the tail, the count); the exchanges that scored worst and the
                               ones a policy blocked or redacted; judge health
GET /evidence/{request_id}     one exchange: every result with the evidence behind it, and its policy decisions

Server-rendered HTML (Jinja2, autoescaped) from the gateway's own results store, policy audit log and metrics: no
script, no asset from elsewhere, nothing computed until someone asks. Behind the admin key as the evaluations API
is (``Authorization: Bearer KEY``, or Basic with the key as password so a browser can ask for it). Samples are
pseudonymised before they are queued, so the evidence holds placeholders ("[NAME_1]"), never the identifiers; the
audit log holds rule names and numbers, never text.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote

import orjson
from prometheus_client import CollectorRegistry

from config import GatewayConfig
from gateway.asgi import Request, Send, start_headers
from gateway.evaluations import AdminKey
from pipeline.sample import Result
from pipeline.store import Query, ResultStore
from protocol.errors import AuthenticationFailed, InvalidRequest, NotFound

if TYPE_CHECKING:
    from jinja2 import Environment

EVIDENCE = "/evidence"
WINDOWS = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
PER_QUERY = 1_000  # the store's largest page: the scorecard reads at most this many results per indicator
WORST = 10
AUDIT_TAIL_BYTES = 4 << 20  # the policy decisions shown come from the last 4 MB of the audit log
# Which way is worse, for the indicators that are verdicts (refusal, length and conciseness are not: whether a
# refusal is right depends on the request, docs/judges.md): the tail and the list of worst exchanges use these.
LOW_IS_BAD = frozenset({"fidelity_coverage", "fidelity_conformity", "fidelity_consistency", "probe_accuracy_plain"})
HIGH_IS_BAD = frozenset({"harmfulness", "judge_disagreement_rate", "judge_majority_deviation", "sycophancy_live",
                         "guard_unsafe", "phi_leak"})  # fmt: skip
ACTED = frozenset({"block", "redact"})
HEALTH = (
    ("Samples waiting in the gateway's buffer", "medic_gateway_sample_buffer"),
    ("Samples dropped before the queue", "medic_gateway_samples_dropped_total"),
    ("Queue lag (samples no judge has read)", "medic_queue_lag"),
    ("Judge calls that failed", "medic_judges_failures_total"),
    ("Samples dead-lettered", "medic_judges_samples_dead_lettered_total"),
    ("Uncertain findings (counted in no score)", "medic_judges_uncertain_findings_total"),
)


class Unauthorised(AuthenticationFailed):
    """401 with a Basic challenge, so that a browser asks for the admin key."""

    headers = ((b"www-authenticate", b'Basic realm="medic-gateway evidence", charset="UTF-8"'),)


@dataclass(frozen=True, slots=True)
class Row:
    model: str
    method: str
    indicator: str
    count: int
    mean: float
    low: float  # 95 % interval of the mean
    high: float
    tail: float  # the 10th percentile where low scores are bad, the 90th where high ones are
    nulls: int  # results that did not apply (null score)


class EvidencePage:
    def __init__(self, store: ResultStore, config: GatewayConfig, gateway_open: bool,
                 registry: CollectorRegistry) -> None:  # fmt: skip
        self.store = store
        self._key = AdminKey(config)
        self._open = gateway_open
        self._audit = Path(config.policies.audit_path) if config.policies.audit_path else None
        self._registry = registry

    async def handle(self, request: Request, send: Send, request_id: str) -> None:
        self._authorise(request.authorization)
        rest = request.path.removeprefix(EVIDENCE).strip("/")
        if rest:
            body = await self.exchange(rest)
        else:
            window = dict(parse_qsl(request.query.decode("latin-1"))).get("window", "24h")
            if window not in WINDOWS:
                raise InvalidRequest(f"window must be one of {', '.join(WINDOWS)}.", param="window")
            body = await self.overview(window)
        headers = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-store"),
                   (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'")]  # fmt: skip
        await send(start_headers(200, headers, request_id, len(body)))
        await send({"type": "http.response.body", "body": body})

    def _authorise(self, authorization: str | None) -> None:
        if not self._key.value:
            if self._open:
                return
            raise Unauthorised("The evidence page needs an admin key: set results.admin_key_env.")
        if not self._key.presented(authorization, basic=True):
            raise Unauthorised("The evidence page needs the admin key (as a bearer token, or as the password).")

    async def overview(self, window: str) -> bytes:
        since = time.time() - WINDOWS[window]
        newest = await self.store.query(Query(since=since, limit=PER_QUERY))
        pairs = sorted({(r.model, r.indicator) for r in newest})
        results: list[Result] = []
        for model, indicator in pairs:
            results += await self.store.query(Query(model=model, indicator=indicator, since=since, limit=PER_QUERY))
        decisions = [d for d in self.decisions() if d.get("time", 0) >= since]
        return _templates().get_template("overview.html").render(
            window=window, windows=list(WINDOWS), rows=scorecard(results), worst=worst(results),
            acted=[d for d in decisions if d.get("action") in ACTED][-50:][::-1], decisions=len(decisions),
            health=self.health(results), capped=any(len([r for r in results if (r.model, r.indicator) == p])
                                                    >= PER_QUERY for p in pairs), link=_link,
        ).encode()  # fmt: skip

    async def exchange(self, request_id: str) -> bytes:
        results = await self.store.get(request_id)
        decisions = [d for d in self.decisions() if d.get("request_id") == request_id]
        if not results and not decisions:
            raise NotFound(f"Nothing recorded for request {request_id} (not sampled, not yet judged, or expired).",
                           code="evaluation_not_found")  # fmt: skip
        shown = [{"result": r, "records": _records(r.evidence)} for r in sorted(results, key=lambda r: r.indicator)]
        return _templates().get_template("exchange.html").render(
            request_id=request_id, results=shown, decisions=decisions, json=_json,
        ).encode()  # fmt: skip

    def decisions(self) -> list[dict[str, Any]]:
        """The policy decisions at the end of the audit log (oldest first)."""
        if self._audit is None or not self._audit.is_file():
            return []
        with self._audit.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - AUDIT_TAIL_BYTES))
            lines = handle.read().splitlines()[1 if size > AUDIT_TAIL_BYTES else 0 :]
        out = []
        for line in lines:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out

    def health(self, results: list[Result]) -> list[tuple[str, str]]:
        """Judge and queue health from this process's metrics, and the judges' disagreement over the window."""

        families = {m.name: m for m in self._registry.collect()}

        def total(name: str) -> float | None:
            family = families.get(name.removesuffix("_total"))
            return None if family is None else sum(s.value for s in family.samples if s.name == name)

        rows = []
        for label, name in HEALTH:
            value = total(name)
            rows.append((label, "not measured in this process" if value is None else f"{value:,.0f}"))
        disagreement = [r.score for r in results if r.indicator == "judge_disagreement_rate" and r.score is not None]
        rows.append(("Judge disagreement rate over the window",
                     f"{statistics.fmean(disagreement):.3f} ({len(disagreement)} samples)" if disagreement
                     else "no second judge configured or no sample"))  # fmt: skip
        return rows


@functools.cache
def _templates() -> Environment:
    """The page's templates, loaded the first time someone looks (the gateway that nobody reads pays nothing)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("gateway", "templates"), autoescape=select_autoescape(["html"]))
    environment.filters["utc"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t or 0)))
    return environment


def scorecard(results: list[Result]) -> list[Row]:
    """One row per model, method and indicator: mean, its 95 % interval (normal approximation), the tail."""
    groups: dict[tuple[str, str, str], list[float | None]] = defaultdict(list)
    for r in results:
        groups[(r.model, r.method, r.indicator)].append(r.score)
    rows = []
    for (model, method, indicator), scores in sorted(groups.items()):
        values = sorted(s for s in scores if s is not None)
        if not values:
            continue
        mean = statistics.fmean(values)
        half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        at = 0.9 if indicator in HIGH_IS_BAD else 0.1
        tail = values[min(len(values) - 1, int(at * len(values)))]
        low, high = max(values[0], mean - half), min(values[-1], mean + half)  # never past what was observed
        rows.append(Row(model, method, indicator, len(values), mean, low, high, tail, len(scores) - len(values)))
    return rows


def worst(results: list[Result]) -> list[Result]:
    """The results that scored worst, each exchange once: lowest first, or highest where high is bad."""

    def badness(r: Result) -> float:
        assert r.score is not None
        return r.score if r.indicator in HIGH_IS_BAD else -r.score

    def flawed(r: Result) -> bool:
        if r.score is None:
            return False
        return (r.indicator in HIGH_IS_BAD and r.score > 0.0) or (r.indicator in LOW_IS_BAD and r.score < 1.0)

    bad = [r for r in results if flawed(r)]
    seen: set[str] = set()
    out = []
    for r in sorted(bad, key=badness, reverse=True):
        if r.request_id not in seen:
            seen.add(r.request_id)
            out.append(r)
    return out[:WORST]


def _records(evidence: list[Any]) -> tuple[list[str], list[list[str]]]:
    """Evidence records as a table: the union of their keys as columns, one row per record."""
    dicts = [e for e in evidence if isinstance(e, dict)]
    columns: list[str] = []
    for record in dicts:
        columns += [k for k in record if k not in columns]
    rows = [[_cell(record.get(c)) for c in columns] for record in dicts]
    rows += [[_cell(e)] + [""] * (len(columns) - 1) for e in evidence if not isinstance(e, dict)]
    return columns or ["evidence"], rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return value if isinstance(value, str) else _json(value)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _link(request_id: str) -> str:
    return f"{EVIDENCE}/{quote(request_id, safe='')}"
