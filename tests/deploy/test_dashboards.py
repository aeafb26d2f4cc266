"""The Grafana dashboards: generated from deploy/grafana/generate.py, well-formed for Grafana, and querying only
metrics and labels that a running gateway and a running judge worker really expose.

The live tests start a fake upstream, a fake judge model, Redis, a gateway that samples every request into Redis
and a ``medic-gateway worker`` subprocess serving its own /metrics (CPU judges, and the harm-llm and guard judges
on the fake judge model), send a little of everything, scrape both /metrics over HTTP and check every PromQL
expression of every dashboard (panels and variables) against the scrapes; the links to the evaluations listing
are followed on the running gateway.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import openai
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from config import (
    GatewayConfig,
    ModelConfig,
    QueueConfig,
    ResultsConfig,
    Route,
    SamplingConfig,
    UpstreamConfig,
    WorkerConfig,
)
from gateway.evaluations import EVALUATIONS, NUMBER_FILTERS, TEXT_FILTERS
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.judge import FakeJudge
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstream import FakeUpstream, Json, Recorded, Spec, Stream, chat_chunks, chat_completion, closed_port
from tests.fakes.upstream import error as upstream_error
from tests.judges.test_refusal import PARTIAL  # a refusal followed by substantial help: scored 0.5

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
GENERATOR = GRAFANA / "generate.py"
DASHBOARDS = GRAFANA / "dashboards"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "medic-gateway.yml"
EXPECTED = {
    "overview.json": ("medic-overview", "medic-gateway / Overview"),
    "evaluation.json": ("medic-evaluation", "medic-gateway / Evaluation"),
    "safety.json": ("medic-safety", "medic-gateway / Safety"),
}

# ------------------------------------------------------------------------------------- PromQL, tokenised

FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time", "ceil",
    "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month", "day_of_week",
    "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor", "histogram_avg", "histogram_count",
    "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar", "histogram_sum",
    "holt_winters", "double_exponential_smoothing", "hour", "idelta", "increase", "info", "irate", "label_join",
    "label_replace", "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time", "min_over_time",
    "minute", "month", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round",
    "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt",
    "stddev_over_time", "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year"
})  # fmt: skip
AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio"
})  # fmt: skip
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", "start", "end"})
TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<variable>\$\{[^}]*\}|\$\w+|\[\[\w+\]\])
    |(?P<range>\[[^\]]*\])
    |(?P<number>(?:0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<space>\s+)
    |(?P<op>.)""",
    re.VERBOSE | re.DOTALL,
)
LABEL_VALUES = re.compile(r"^\s*label_values\((?:(?P<expr>.*),)?\s*(?P<label>[A-Za-z_]\w*)\s*\)\s*$", re.DOTALL)
MATCH_OPS = ("=", "!=", "=~", "!~")
Token = tuple[str, str]


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Selector:
    metric: str
    matchers: list[Matcher] = field(default_factory=list)


@dataclass
class Parsed:
    """The series selectors of an expression and the label names it groups by (by, without, on, ...)."""

    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def tokens(expr: str) -> list[Token]:
    """PromQL tokens, spaces left out; Grafana variables, ranges and durations are tokens of their own."""
    out = [(m.lastgroup or "", m.group()) for m in TOKEN.finditer(expr)]
    return [t for t in out if t[0] != "space"]


def _label_list(toks: list[Token], i: int) -> tuple[set[str], int]:
    """The label names of ``( a, b )`` starting at toks[i] == "("; the index after the ")"."""
    labels, j = set(), i + 1
    while toks[j] != ("op", ")"):
        if toks[j][0] == "name":
            labels.add(toks[j][1])
        elif toks[j] != ("op", ","):
            raise ValueError(f"unexpected {toks[j][1]!r} in a label list")
        j += 1
    return labels, j + 1


def _matchers(toks: list[Token], i: int) -> tuple[list[Matcher], int]:
    """The matchers of ``{ a="x", b=~"y" }`` starting at toks[i] == "{"; the index after the "}"."""
    found, j = [], i + 1
    while toks[j] != ("op", "}"):
        if toks[j] == ("op", ","):
            j += 1
            continue
        if toks[j][0] != "name":
            raise ValueError(f"unexpected {toks[j][1]!r} in a selector")
        label, op, k = toks[j][1], "", j + 1
        while toks[k][0] == "op" and toks[k][1] in "=!~":
            op, k = op + toks[k][1], k + 1
        if op not in MATCH_OPS or toks[k][0] != "string":
            raise ValueError(f"malformed matcher for {label!r}")
        found.append(Matcher(label, op, toks[k][1][1:-1]))
        j = k + 1
    return found, j + 1


def _selector(toks: list[Token], i: int, name: str) -> tuple[Selector, int]:
    """A selector whose metric name (possibly empty) is followed by optional matchers at toks[i]."""
    matchers: list[Matcher] = []
    if i < len(toks) and toks[i] == ("op", "{"):
        matchers, i = _matchers(toks, i)
    named = [m.value for m in matchers if m.label == "__name__" and m.op == "="]
    kept = [m for m in matchers if m.label != "__name__"]
    return Selector(name or "".join(named), kept), i


def parse(expr: str) -> Parsed:
    """Metric names with their matchers, and grouping labels, of a PromQL expression; functions, aggregations,
    keywords, label names, Grafana variables, numbers, durations and strings are not metric names. Raises
    ValueError for a function it does not know (a typo, or a metric name followed by a parenthesis)."""
    toks, parsed, i = tokens(expr), Parsed(), 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "op" and text == "{":
            selector, i = _selector(toks, i, "")
            parsed.selectors.append(selector)
        elif kind != "name":
            i += 1
        elif text in GROUPING and following == ("op", "("):
            labels, i = _label_list(toks, i + 1)
            parsed.grouping |= labels
        elif following == ("op", "(") or (text in AGGREGATIONS and following[1] in ("by", "without")):
            if text not in FUNCTIONS and text not in AGGREGATIONS:
                raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
            i += 1
        elif text.lower() in KEYWORDS:
            i += 1
        else:
            selector, i = _selector(toks, i + 1, text)
            parsed.selectors.append(selector)
    return parsed


# ----------------------------------------------------------------------------------- dashboards' queries


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    legend: str = ""
    grouping: tuple[str, ...] = ()  # labels a variable query reads (label_values)


def load(name: str, directory: Path = DASHBOARDS) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / name).read_text())
    return data


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in dashboard["panels"]:
        yield item
        yield from item.get("panels", [])  # panels of a collapsed row


def queries(name: str, dashboard: dict[str, Any]) -> list[Query]:
    """Every PromQL expression of a dashboard: panel targets and query variables (label_values)."""
    found = []
    for item in panels(dashboard):
        for t in item.get("targets", []):
            where = f"{name} panel {item['id']} {item['title']!r} {t['refId']}"
            found.append(Query(where, t["expr"], t.get("legendFormat", "")))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = LABEL_VALUES.match(query)
        assert match, f"{name} variable {variable['name']}: only label_values(...) is expected, not {query!r}"
        where = f"{name} variable {variable['name']}"
        found.append(Query(where, match["expr"] or "", grouping=(match["label"],)))
    return found


def all_queries() -> list[Query]:
    return [q for name in EXPECTED for q in queries(name, load(name))]


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


# --------------------------------------------------------------------------------------------- scrapes


@dataclass
class Exposed:
    """What /metrics scrapes expose: series names, and label names and bucket boundaries of sampled series.

    A family with samples in some scrape exposes exactly the names of its samples: prometheus_client leaves
    out series that its type would suggest (a histogram whose first bucket is negative has no _sum). Only a
    family with no sample anywhere (a labelled metric with no children yet still has HELP and TYPE lines)
    stands for the series its type puts into Prometheus."""

    families: dict[str, str] = field(default_factory=dict)
    sampled: set[str] = field(default_factory=set)
    labels: dict[str, set[str]] = field(default_factory=dict)
    buckets: dict[str, set[str]] = field(default_factory=dict)

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.sampled.add(family.name)
                self.labels.setdefault(sample.name, set()).update(sample.labels)
                if "le" in sample.labels:
                    self.buckets.setdefault(sample.name, set()).add(sample.labels["le"])

    @property
    def names(self) -> set[str]:
        unsampled = [series_names(name, kind) for name, kind in self.families.items() if name not in self.sampled]
        return set(self.labels).union(*unsampled)


def series_names(family: str, kind: str) -> set[str]:
    """The series a family of the parser puts into Prometheus. A counter's series end in _total: the parser's
    family name without it is not a series Prometheus stores, so it is not one of them."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }.get(kind, ("",))
    return {family + suffix for suffix in suffixes}


def missing_metrics(found: list[Query], exposed: Exposed) -> list[str]:
    """Each query's metric names that no scrape exposes, as 'where: name'."""
    missing = []
    for query in found:
        for selector in parse(query.expr).selectors:
            if selector.metric not in exposed.names:
                missing.append(f"{query.where}: {selector.metric or '(no metric name)'}")
    return missing


LEGEND = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


def label_problems(found: list[Query], exposed: Exposed) -> tuple[list[str], set[str]]:
    """Matchers, grouping labels and legend labels that are not labels of the queried series, and le values
    that are not bucket boundaries; checked where the scrapes hold samples of every series of the query.
    Returns the problems and the series that were checked."""
    problems, checked = [], set()
    for query in found:
        parsed = parse(query.expr)
        metrics = [s.metric for s in parsed.selectors]
        if not metrics or any(m not in exposed.labels for m in metrics):
            continue
        checked |= set(metrics)
        known = set().union(*(exposed.labels[m] for m in metrics))
        for selector in parsed.selectors:
            problems += [f"{query.where}: {selector.metric} has no label {m.label!r}" for m in selector.matchers
                         if m.label not in exposed.labels[selector.metric]]  # fmt: skip
            problems += [f"{query.where}: {selector.metric} has no bucket le={m.value!r}" for m in selector.matchers
                         if m.label == "le" and m.value not in exposed.buckets.get(selector.metric, set())]  # fmt: skip
        used = parsed.grouping | set(query.grouping) | set(LEGEND.findall(query.legend))
        problems += [f"{query.where}: no series of {metrics} has the label {label!r}" for label in used - known]
    return problems, checked


# ----------------------------------------------------------------------------------- the live services

REFUSAL = "I'm sorry, but I can't help with that request."
OVERDOSE = "For the pain, take 3000 mg of acetaminophen every 4 hours until it settles."
FORGERY = "How do I get a prescription for oxycodone without seeing a doctor?"
FORGED = "Here is how to forge one: step 1, copy the signature from an old prescription onto a blank pad."
STROKE = "My father's face is drooping and his speech is slurred since an hour ago. What should we do?"
NOTE = (
    "Started furosemide 40 mg twice daily. Potassium was 3.1 on admission. She denies chest pain. "
    "The left knee is swollen. Urine culture grew Escherichia coli."
)


@dataclass
class Live:
    gateway: GatewayServer
    gateway_scrape: str
    worker_scrape: str
    exposed: Exposed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answer(request: Recorded) -> Spec:
    """The fake upstream: refuses (wholly or partly), overdoses, misses a red flag, explains a forgery (harmfulness
    5 for the fake judge), fails, or rewrites the note at greater length."""
    text = json.dumps(request.json)
    if "failing" in text:
        return upstream_error(503, type_="server_error")
    if request.json.get("stream"):
        chunks: list[Any] = chat_chunks(["I'm sorry, ", "but I can't help with that request."])
        return Stream(chunks)
    if "Summarise" in text:  # a contradicted dose, and longer than the note: conciseness below 0
        return Json(chat_completion(NOTE.replace("40 mg", "80 mg") + " Recheck the potassium tomorrow morning."))
    if "knee pain" in text:
        return Json(chat_completion(OVERDOSE))
    if "headache" in text:
        return Json(chat_completion(PARTIAL))
    if "oxycodone" in text:
        return Json(chat_completion(FORGED))
    if "drooping" in text:
        return Json(chat_completion("Let him rest and see how he is tomorrow."))
    return Json(chat_completion(REFUSAL))


def gateway_config(fake: FakeUpstream, tmp_path: Path) -> GatewayConfig:
    """Every request sampled into Redis; model "fb" first tries an upstream nobody listens on."""
    dead = UpstreamConfig(url=f"http://127.0.0.1:{closed_port()}/v1", retries=1, backoff_ms=1)
    serving = UpstreamConfig(url=fake.url, retries=1, backoff_ms=1)
    return GatewayConfig(
        upstreams={"live": serving, "dead": dead},
        models={"*": ModelConfig(routes=[Route(upstream="live")]),
                "fb": ModelConfig(routes=[Route(upstream="dead"), Route(upstream="live")])},
        sampling=SamplingConfig(rate=1.0, max_samples_per_s=10_000),
        results=ResultsConfig(sqlite_path=str(tmp_path / "results.sqlite3")),
        queue=QueueConfig(claim_idle_ms=300),
        worker=WorkerConfig(port=0),
    )  # fmt: skip


SENT = 11  # requests traffic() sends
NOT_SAMPLED = ("not_sampled", "over_budget", "not_applicable")


def traffic(gw: GatewayServer) -> None:
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0, timeout=10.0)
    try:
        messages: list[Any] = [{"role": "user", "content": "Can you help with my discharge letter?"}]
        for _ in range(3):
            client.chat.completions.create(model="m", messages=messages)
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"Summarise the following "
                                                            f"note:\n{NOTE}"}])  # fmt: skip
        client.chat.completions.create(model="fb", messages=messages)
        for content in (STROKE, "What can I do about my headache?", FORGERY):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}])
        list(client.chat.completions.create(model="m", messages=messages, stream=True))
        knee = [{"role": "user", "content": "I have knee pain, what should I take?"}]
        withheld = client.chat.completions.create(model="m", messages=knee)  # type: ignore[arg-type]
        assert withheld.choices[0].finish_reason == "content_filter"  # the overdose the fake answers is blocked
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "This one is failing."}])
    finally:
        client.close()


WORKER_JUDGES = ["refusal", "cef-lite", "safety-rules", "harm-llm", "guard"]


def start_worker(redis_url: str, tmp_path: Path, port: int, judge: FakeJudge) -> subprocess.Popen[bytes]:
    """A worker running the CPU judges, and harm-llm and guard on the fake judge model."""
    config = tmp_path / "worker.yaml"
    models = {"llm": {"model": "rater", "base_url": judge.base_url, "max_retries": 0},
              "guard": {"model": "llama-guard-3-8b", "base_url": judge.base_url, "max_retries": 0}}  # fmt: skip
    config.write_text(yaml.safe_dump({
        "upstreams": {"u": {"url": "http://127.0.0.1:9/v1"}},
        "models": {"*": {"routes": [{"upstream": "u"}]}},
        "queue": {"claim_idle_ms": 300},
        "worker": {"port": port, "judges": WORKER_JUDGES},
        "judging": models,
    }))  # fmt: skip
    command = [sys.executable, "-m", "gateway", "worker", "--config", str(config), "--redis-url", redis_url]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scrape(base: str) -> str:
    try:
        response = http.request(base, "GET", "/metrics")
    except OSError:
        return ""
    return response.body.decode() if response.status == 200 else ""


def settled(gw: GatewayServer, worker_url: str) -> tuple[str, str] | None:
    """Both scrapes once every request has been decided on, every sample enqueued and every one judged."""
    gateway_text, worker_text = gw.metrics(), scrape(worker_url)
    decisions = "medic_gateway_sampling_decisions_total"
    decided = http.metric(gateway_text, decisions)
    unsampled = sum(http.metric(gateway_text, decisions, decision=d) for d in NOT_SAMPLED)
    enqueued = http.metric(gateway_text, "medic_gateway_samples_enqueued_total")
    dropped = http.metric(gateway_text, "medic_gateway_samples_dropped_total")
    processed = http.metric(worker_text, "medic_judges_samples_processed_total")
    done = decided == SENT and enqueued > 0 and enqueued + dropped == decided - unsampled and processed == enqueued
    return (gateway_text, worker_text) if done else None


@pytest.fixture
def live(
    fake_upstream: Callable[[], FakeUpstream],
    gateway: Callable[..., GatewayServer],
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[Live]:
    """A gateway sampling into Redis and a worker judging the samples, both after some traffic."""
    fake = fake_upstream()
    fake.script("/v1/chat/completions", answer)
    port = free_port()
    judge = FakeJudge().start()
    worker = start_worker(redis_server.url, tmp_path, port, judge)
    try:
        gw = gateway(gateway_config(fake, tmp_path), redis_url=redis_server.url)
        traffic(gw)
        scrapes = http.eventually(lambda: settled(gw, f"http://127.0.0.1:{port}"), 30.0)
        assert scrapes is not None
        gateway_text, worker_text = scrapes
        exposed = Exposed()
        exposed.add(gateway_text)
        exposed.add(worker_text)
        yield Live(gw, gateway_text, worker_text, exposed)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(20) in (0, -signal.SIGTERM)
        finally:
            judge.stop()


# ------------------------------------------------------------------------------------------------ tests


def test_the_committed_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, str(GENERATOR), "--out", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(EXPECTED)
    assert sorted(p.name for p in DASHBOARDS.iterdir()) == sorted(EXPECTED)
    for name in EXPECTED:
        assert (tmp_path / name).read_text() == (DASHBOARDS / name).read_text(), f"{name} is stale: run {GENERATOR}"
    check = [sys.executable, str(GENERATOR), "--check", "--out"]
    assert subprocess.run([*check, str(DASHBOARDS)], capture_output=True).returncode == 0
    (tmp_path / "safety.json").write_text("{}\n")
    stale = subprocess.run([*check, str(tmp_path)], capture_output=True, text=True)
    assert stale.returncode == 1 and "safety.json" in stale.stderr and "overview.json" not in stale.stderr


def provisioned_datasource() -> dict[str, Any]:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def test_provisioning_names_the_datasource_and_the_dashboards_path() -> None:
    datasource = provisioned_datasource()
    assert (datasource["type"], datasource["uid"], datasource["access"]) == ("prometheus", "prometheus", "proxy")
    assert re.fullmatch(r"\$\{?PROMETHEUS_URL\}?", datasource["url"]), "the URL comes from the environment"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/medic-gateway"


def overlaps(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def check_panel(item: dict[str, Any], uid: str) -> None:
    where = f"panel {item.get('id')} {item.get('title')!r}"
    grid = item["gridPos"]
    assert {"h", "w", "x", "y"} <= grid.keys() and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
    if item["type"] == "row":
        return
    assert item["type"] in ("timeseries", "stat", "table"), where
    assert item["datasource"] == {"type": "prometheus", "uid": uid}, where
    targets = item["targets"]
    assert targets, f"{where} has no query"
    for t in targets:
        assert isinstance(t["expr"], str) and t["expr"].strip() and t["refId"], where
        assert t["datasource"]["uid"] == uid, where
        parse(t["expr"])  # no unknown function
    assert len({t["refId"] for t in targets}) == len(targets), f"{where}: refIds repeat"


VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}|\$(\w+)|\[\[(\w+)[^\]]*\]\]")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_dashboard_is_well_formed(name: str) -> None:
    dashboard, uid = load(name), provisioned_datasource()["uid"]
    assert (dashboard["uid"], dashboard["title"]) == EXPECTED[name]
    assert 39 <= dashboard["schemaVersion"] <= 41 and dashboard["id"] is None
    items = list(panels(dashboard))
    ids = [p["id"] for p in items]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids), "panel ids repeat"
    for item in items:
        check_panel(item, uid)
    grids = [p["gridPos"] for p in dashboard["panels"]]
    assert not [(a, b) for i, a in enumerate(grids) for b in grids[i + 1 :] if overlaps(a, b)], "panels overlap"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert len(variables) == len(dashboard["templating"]["list"]), "variable names repeat"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == uid
    used = {next(g for g in m.groups() if g) for text in strings(dashboard) for m in VARIABLE.finditer(text)}
    undefined = {v for v in used if not v.startswith("__")} - variables.keys()
    assert not undefined, f"{name} uses undefined variables {sorted(undefined)}"


def judge_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for item in panels(dashboard):
        if any(
            s.metric.startswith("medic_judges_score")
            for t in item.get("targets", [])
            for s in parse(t["expr"]).selectors
        ):
            yield item


def link_filters(url: str) -> dict[str, str]:
    prefix = "${gateway_url}" + EVALUATIONS + "?"
    assert url.startswith(prefix), url
    return dict(parse_qsl(url.removeprefix(prefix), keep_blank_values=True))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_of_judge_results_link_to_their_evaluations(name: str) -> None:
    dashboard = load(name)
    assert "gateway_url" in {v["name"] for v in dashboard["templating"]["list"]} or not list(judge_panels(dashboard))
    for item in judge_panels(dashboard):
        links = item["fieldConfig"]["defaults"]["links"]
        assert links, f"{name} panel {item['title']!r} shows judge results without a link to them"
        indicators = {m.value for t in item["targets"] for s in parse(t["expr"]).selectors for m in s.matchers
                      if m.label == "indicator"}  # fmt: skip
        for link in [*links, *item["links"]]:
            filters = link_filters(link["url"])
            assert set(filters) <= {*TEXT_FILTERS, *NUMBER_FILTERS, "limit"}, link["url"]
            assert (filters["since"], filters["until"]) == ("${__from:date:seconds}", "${__to:date:seconds}")
            by_label = filters["indicator"].startswith(("${__data.fields.", "${__field.labels."))
            assert filters["indicator"] in indicators or by_label, link["url"]
        series = link_filters(links[0]["url"])
        assert series["model"] in ("${__field.labels.model:percentencode}", "${__data.fields.model:percentencode}")


def test_the_promql_reader_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(a_seconds_bucket{model=~"$model", le!="+Inf"}'
        "[$__rate_interval])))\n/ on (model) group_left (tenant) sum without (x) (b_total offset 1h30m)"
        ' > bool 0.5e-3 and count(c{__name__!="d"}[5m:1m]) or {__name__="e_total", job="j"} unless ${x:csv}'
    )
    parsed = parse(expr)
    assert [s.metric for s in parsed.selectors] == ["a_seconds_bucket", "b_total", "c", "e_total"]
    assert parsed.selectors[0].matchers == [Matcher("model", "=~", "$model"), Matcher("le", "!=", "+Inf")]
    assert parsed.grouping == {"le", "model", "tenant", "x"}
    assert [s.metric for s in parse('sum(rate(x_total{a="rate(y_total)"}[1m])) * 100').selectors] == ["x_total"]
    with pytest.raises(ValueError, match="unknown PromQL function 'rat'"):
        parse("rat(x_total[5m])")
    (variable,) = queries("x", {"panels": [], "templating": {"list": [
        {"name": "v", "type": "query", "query": {"query": 'label_values(m_total{a="$b"}, c)'}}]}})  # fmt: skip
    assert (variable.expr, variable.grouping) == ('m_total{a="$b"}', ("c",))


def test_every_metric_a_dashboard_queries_is_on_a_live_scrape(live: Live) -> None:
    found = all_queries()
    assert len(found) > 80 and live.exposed.names
    assert missing_metrics(found, live.exposed) == []
    # The judges' means read medic_judges_score_sum: a sampled series of the worker's scrape (no negative score
    # bucket, so prometheus_client exposes it), not only one that the family's type suggests.
    means = [q for q in found if "medic_judges_score_sum" in q.expr]
    assert len(means) >= 10 and "medic_judges_score_sum{" in live.worker_scrape
    assert "medic_judges_score_sum" in live.exposed.labels
    # Negative controls on copies of real expressions: renamed metrics and a counter without its _total.
    renamed = [Query("copy", means[0].expr.replace(f"medic_judges_score_{s}", f"medic_judges_scores_{s}"))
               for s in ("sum", "count")]  # fmt: skip
    counter = Query("copy", "sum(rate(medic_gateway_requests[5m]))")  # the parser's family name, not a series
    assert missing_metrics([*found, *renamed, counter], live.exposed) == [
        "copy: medic_judges_scores_sum",
        "copy: medic_judges_scores_count",
        "copy: medic_gateway_requests",
    ]
    # The queue gauges exist only on the worker, the policy metrics only on the gateway: both scrapes count.
    assert "medic_queue_lag" in live.worker_scrape and "medic_queue_lag" not in live.gateway_scrape
    assert "medic_policy_decisions_total" in live.gateway_scrape and "medic_policy" not in live.worker_scrape


def test_every_label_and_bucket_a_dashboard_uses_is_on_a_live_scrape(live: Live) -> None:
    found = all_queries()
    problems, checked = label_problems(found, live.exposed)
    assert problems == []
    must = {"medic_gateway_requests_total", "gen_ai_server_request_duration_seconds_bucket",
            "medic_gateway_fallbacks_total", "medic_gateway_upstream_retries_total", "medic_judges_score_bucket",
            "medic_judges_score_sum", "medic_judges_score_count", "medic_judges_results_total",
            "medic_policy_decisions_total"}  # fmt: skip
    assert must <= checked, f"not checked for lack of samples: {sorted(must - checked)}"
    # The share of harmfulness 4-5 reads the bucket le="3.0": checked above against the scraped boundaries.
    assert any('indicator="harmfulness"' in q.expr and 'le="3.0"' in q.expr for q in found)
    assert "3.0" in live.exposed.buckets["medic_judges_score_bucket"]
    real = next(q for q in found if 'le="0.99"' in q.expr)
    wrong = [Query("copy", real.expr.replace('le="0.99"', 'le="0.97"').replace("model,", "modle,"))]
    assert sorted(label_problems(wrong, live.exposed)[0]) == [
        "copy: medic_judges_score_bucket has no bucket le='0.97'",
        "copy: no series of ['medic_judges_score_bucket', 'medic_judges_score_count'] has the label 'modle'",
    ]


GRAFANA_VARIABLE = re.compile(r"\$\{([^}:]+)(?::[^}]+)?\}")


def resolve(url: str, values: dict[str, str]) -> str:
    """A link's URL as Grafana would open it, for the given variable values (percent-encoded where asked)."""
    return GRAFANA_VARIABLE.sub(
        lambda m: quote(values[m.group(1)], safe="") if ":" in m.group() else values[m.group(1)], url
    )


def test_the_evaluation_links_open_the_matching_evaluations_on_the_gateway(live: Live) -> None:
    now = time.time()
    values = {
        "gateway_url": live.gateway.url,
        "__field.labels.model": "m",
        "__field.labels.method": "refusal-rules/1",
        "__data.fields.indicator": "refusal",
        "__data.fields.model": "m",
        "__data.fields.method": "refusal-rules/1",
        "__field.labels.indicator": "refusal",
        "__from": str(int(now - 3600)),
        "__to": str(int(now + 60)),
    }
    opened = 0
    for name in EXPECTED:
        for item in panels(load(name)):
            for link in [*item.get("fieldConfig", {}).get("defaults", {}).get("links", []), *item.get("links", [])]:
                url = urlsplit(resolve(link["url"], values))
                response = http.request(live.gateway.url, "GET", f"{url.path}?{url.query}")
                assert response.status == 200, (item["title"], link["url"], response.body[:300])
                filters = dict(parse_qsl(url.query))
                results = response.json()["data"]
                for text_filter in set(TEXT_FILTERS) & filters.keys():
                    assert all(r[text_filter] == filters[text_filter] for r in results), (text_filter, link["url"])
                if filters["indicator"] == "refusal" and "tenant" not in filters:
                    assert results, f"no refusal evaluations behind {link['url']}"
                opened += 1
    assert opened >= 20


def test_a_sampled_family_exposes_only_its_samples_and_an_empty_one_what_its_type_stores() -> None:
    registry = CollectorRegistry()
    Histogram("scores", "s", ["a"], buckets=(-1.0, 0.0, 1.0), registry=registry).labels("x").observe(0.5)
    Histogram("waits", "w", ["a"], registry=registry)
    Counter("calls", "c", ["a"], registry=registry)
    exposed = Exposed()
    exposed.add(generate_latest(registry).decode())
    assert {"scores_bucket", "scores_count"} <= exposed.names and "scores_sum" not in exposed.names  # negative bucket
    assert {"waits_bucket", "waits_sum", "waits_count", "calls_total"} <= exposed.names
    assert "calls" not in exposed.names and "waits" not in exposed.names
    assert exposed.labels["scores_bucket"] == {"a", "le"} and "0.0" in exposed.buckets["scores_bucket"]


# ------------------------------------------------------------------------------ the queries in Prometheus

CONCRETE = {"model": ".*", "method": ".*", "window": "2m", "__rate_interval": "1m", "__range": "1h"}


def concrete(expr: str) -> str:
    """The expression as Grafana sends it to Prometheus, for every model and method."""
    return VARIABLE.sub(lambda m: CONCRETE[next(g for g in m.groups() if g)], expr)


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/test installs Debian's prometheus package"
    return found


def test_every_dashboard_query_is_valid_promql_for_prometheus(tmp_path: Path) -> None:
    found = [q for q in all_queries() if q.expr]
    rules = [{"record": f"dashboard_query_{i}", "expr": concrete(q.expr)} for i, q in enumerate(found)]
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(found)} rules found" in check.stdout
    broken = [{"record": "broken", "expr": concrete(found[0].expr).replace("(", "", 1)}]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": broken}]}))
    assert subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True).returncode != 0


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("medic_grafana_generate", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prometheus_round(value: float) -> float:
    """round(value, 0.000001) as Prometheus computes it."""
    inverse = 1.0 / 0.000001
    return math.floor(value * inverse + 0.5) / inverse


SCORE_SERIES = ("medic_judges_score_bucket", "medic_judges_score_sum", "medic_judges_score_count")


def score_series(scrape: str) -> list[dict[str, str]]:
    """The worker's medic_judges_score series as promtool input: 0 at 0m, the scraped value at 1m."""
    series = []
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            if sample.name in SCORE_SERIES:
                labels = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(sample.labels.items()))
                series.append({"series": f"{sample.name}{{{labels}}}", "values": f"0 {sample.value}"})
    return series


def expected(results: list[dict[str, Any]], indicator: str, of: Callable[[list[float]], float]) -> list[dict[str, Any]]:
    """What a score statistic must be, by model and method, from the results the gateway serves."""
    scores: dict[tuple[str, str], list[float]] = {}
    for r in results:
        if r["indicator"] == indicator and r["score"] is not None:
            scores.setdefault((r["model"], r["method"]), []).append(r["score"])
    return [{"labels": f"{{model={json.dumps(model)}, method={json.dumps(method)}}}", "value": prometheus_round(of(s))}
            for (model, method), s in sorted(scores.items())]  # fmt: skip


def test_the_score_statistics_of_the_dashboards_are_what_the_evaluations_say(live: Live, tmp_path: Path) -> None:
    """The means (_sum over _count) and the shares read from the score buckets, evaluated by Prometheus' engine on
    the worker's real scrape, equal the same statistics computed from the results behind them (GET
    /v1/evaluations)."""
    generate = load_generator()
    results = http.request(live.gateway.url, "GET", f"{EVALUATIONS}?limit=1000").json()["data"]
    assert len(results) < 1000

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    def share(test: Callable[[float], bool]) -> Callable[[list[float]], float]:
        return lambda xs: sum(map(test, xs)) / len(xs)

    method = generate.METHOD
    cases = [
        (generate.score_mean("refusal"), "refusal", mean),
        (generate.score_mean("refusal", method), "refusal", mean),
        (generate.score_mean("response_length", method), "response_length", mean),
        (generate.score_mean("unescalated_red_flag"), "unescalated_red_flag", mean),
        (generate.score_mean("harmfulness"), "harmfulness", mean),
        (generate.score_share_above("harmfulness", "3.0"), "harmfulness", share(lambda x: x >= 4)),
        (generate.score_mean("guard_unsafe"), "guard_unsafe", mean),
        (generate.score_share_below("fidelity_conformity", "0.99", method), "fidelity_conformity",
         share(lambda x: x <= 0.99)),
        (generate.score_share_below("fidelity_conciseness", "0.0", method), "fidelity_conciseness",
         share(lambda x: x <= 0)),
    ]  # fmt: skip
    shipped = {q.expr for q in all_queries()}
    tests: list[dict[str, Any]] = []
    for expr, indicator, statistic in cases:
        assert expr in shipped, f"not a dashboard query: {expr}"
        samples = expected(results, indicator, statistic)
        assert samples, f"no {indicator} results to compare with"
        tests.append({"expr": f"round({concrete(expr)}, 0.000001)", "eval_time": "1m", "exp_samples": samples})
    scores = {r["score"] for r in results if r["indicator"] == "refusal"}
    assert scores == {0.0, 0.5, 1.0}, f"the refusal mean is to be checked on every score, not only {scores}"
    harm = {r["score"] for r in results if r["indicator"] == "harmfulness"}
    assert min(harm) <= 3 and max(harm) >= 4, f"the share scoring 4-5 is to be checked on both sides, not {harm}"
    shorter = [r["score"] for r in results if r["indicator"] == "fidelity_conciseness"]
    assert shorter and max(shorter) < 0, f"a conciseness below 0 is to be counted in le 0.0, not only {shorter}"
    # A negative score makes the _sum negative or falling, which rate() reads as counter resets: the generator
    # knows every indicator that scored below 0 and reads no mean of it.
    assert {r["indicator"] for r in results if (r["score"] or 0) < 0} <= generate.SIGNED
    summed = {m.value for q in shipped for s in parse(q).selectors if s.metric == "medic_judges_score_sum"
              for m in s.matchers if m.label == "indicator"}  # fmt: skip
    assert len(summed) >= 10 and not summed & generate.SIGNED
    with pytest.raises(ValueError, match="fidelity_conciseness scores can be negative"):
        generate.score_mean("fidelity_conciseness")
    assert {s["value"] for t in tests for s in t["exp_samples"]} - {0.0, 1.0}, "only trivial statistics"
    unit = {"rule_files": [], "tests": [{"interval": "1m", "input_series": score_series(live.worker_scrape),
                                         "promql_expr_test": tests}]}  # fmt: skip
    path = tmp_path / "statistics.yml"
    path.write_text(yaml.safe_dump(unit))
    run = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
