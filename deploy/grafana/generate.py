"""The Grafana dashboards of medic-gateway, generated from code (standard library only).

    python deploy/grafana/generate.py               # writes deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --out DIR     # writes them into DIR instead
    python deploy/grafana/generate.py --check       # writes nothing; exit status 1 when a file is stale

Three dashboards: Overview (traffic, latency, errors, tokens, sampling), Evaluation (judge indicators, samples,
judge and queue health, sycophancy probes) and Safety (policy decisions and model states, refusal and
over-refusal, harmfulness, safety rules, guard). Every query uses the Prometheus datasource that
provisioning/datasources/prometheus.yml provisions (uid ``prometheus``). Metric names and labels are those of
docs/metrics.md; tests/deploy/test_dashboards.py checks every one against a live scrape of a gateway and a
worker. Panels that show judge results link to the gateway's evaluations listing (GET /v1/evaluations, behind
the admin key when the gateway has one) through the dashboard variable ``gateway_url``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Json = dict[str, Any]

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
DATASOURCE: Json = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39
TAG = "medic-gateway"
WIDTH = 24
RATE = "$__rate_interval"
WINDOW = "$window"
EVALUATIONS_LIMIT = 100

# ------------------------------------------------------------------------------------------------ PromQL


def sel(metric: str, *matchers: str) -> str:
    """A selector: ``metric{matcher, ...}``; empty matchers are left out."""
    kept = [m for m in matchers if m]
    return f"{metric}{{{', '.join(kept)}}}" if kept else metric


def rate(selector: str, window: str = RATE) -> str:
    return f"rate({selector}[{window}])"


def increase(selector: str, window: str = RATE) -> str:
    return f"increase({selector}[{window}])"


def agg(function: str, by: str, inner: str) -> str:
    """``sum by (labels) (inner)``, or ``sum(inner)`` with no labels."""
    return f"{function} by ({by}) ({inner})" if by else f"{function}({inner})"


def ratio(numerator: str, denominator: str) -> str:
    return f"{numerator}\n/ {denominator}"


MODEL = 'model=~"$model"'
METHOD = 'method=~"$method"'
GENAI_MODEL = 'gen_ai_request_model=~"$model"'

# ------------------------------------------------------------------------------------------- panel parts


def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> Json:
    """One Prometheus query; the panel gives refIds in order."""
    out: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        out["format"] = "table"
    return out


def quantiles(metric: str, by: str = "", matcher: str = "", legend: str = "") -> list[Json]:
    """p50 and p99 of a histogram, per combination of the labels in ``by``."""
    labels = f"le, {by}" if by else "le"
    inner = agg("sum", labels, rate(sel(f"{metric}_bucket", matcher)))
    return [target(f"histogram_quantile({q}, {inner})", f"p{round(q * 100)} {legend}".strip()) for q in (0.5, 0.99)]


def panel(kind: str, title: str, description: str, targets: list[Json], unit: str, options: Json, **extra: Any) -> Json:
    """A panel without id and gridPos (the board gives both). ``extra``: min, max, decimals, custom,
    data_links (per series or cell), links (in the panel header), transformations."""
    defaults: Json = {key: extra[key] for key in ("custom", "min", "max", "decimals") if key in extra}
    defaults |= {
        "unit": unit,
        "links": extra.get("data_links", []),
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
    }
    out: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "links": extra.get("links", []),
    }
    if "transformations" in extra:
        out["transformations"] = extra["transformations"]
    return out


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    unit: str = "short",
    *,
    stack: bool = False,
    draw: str = "line",
    step: bool = False,
    **extra: Any,
) -> Json:
    custom: Json = {
        "drawStyle": draw,
        "lineInterpolation": "stepAfter" if step else "linear",
        "lineWidth": 1,
        "fillOpacity": 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    options: Json = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, targets, unit, options, custom=custom, **extra)


def stat(title: str, description: str, expr: str, unit: str = "short", **extra: Any) -> Json:
    options: Json = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto",
    }
    return panel("stat", title, description, [target(expr, instant=True)], unit, options, **extra)


def table(title: str, description: str, expr: str, unit: str = "short", **extra: Any) -> Json:
    options: Json = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}
    organize = {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "value"}}}
    targets = [target(expr, instant=True, table=True)]
    return panel("table", title, description, targets, unit, options, transformations=[organize], **extra)


class Board:
    """Panels laid out left to right in rows of 24 columns, each row under a row header; ids in order."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self._x = self._y = self._height = 0

    def row(self, title: str) -> None:
        self._newline()
        grid = {"h": 1, "w": WIDTH, "x": 0, "y": self._y}
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": grid})
        self._y += 1

    def add(self, item: Json, w: int = 12, h: int = 8) -> None:
        if self._x + w > WIDTH:
            self._newline()
        self.panels.append({**item, "gridPos": {"h": h, "w": w, "x": self._x, "y": self._y}})
        self._x += w
        self._height = max(self._height, h)

    def _newline(self) -> None:
        self._y += self._height
        self._x = self._height = 0

    def numbered(self) -> list[Json]:
        return [{"id": i, **p} for i, p in enumerate(self.panels, start=1)]


# ---------------------------------------------------------------------------------------------- variables


def query_variable(name: str, label: str, query: str, description: str) -> Json:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }


def window_variable() -> Json:
    choices = ["15m", "1h", "6h", "1d"]
    return {
        "name": "window",
        "label": "Window",
        "description": "The window of the judge means and shares: the judges score a sample of the traffic, so "
        "short windows are noisy.",
        "type": "custom",
        "query": ",".join(choices),
        "current": {"selected": True, "text": "1h", "value": "1h"},
        "options": [{"selected": c == "1h", "text": c, "value": c} for c in choices],
        "multi": False,
        "includeAll": False,
        "hide": 0,
    }


def gateway_url_variable() -> Json:
    default = "http://localhost:8000"
    return {
        "name": "gateway_url",
        "label": "Gateway URL",
        "description": "Where the browser reaches the gateway: links open its evaluations listing "
        "(GET /v1/evaluations, behind the admin key when the gateway has one).",
        "type": "textbox",
        "query": default,
        "current": {"selected": False, "text": default, "value": default},
        "options": [{"selected": True, "text": default, "value": default}],
        "hide": 0,
    }


def dashboard(uid: str, title: str, description: str, board: Board, variables: list[Json]) -> Json:
    annotation = {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }
    others = {
        "type": "dashboards",
        "title": "medic-gateway",
        "tags": [TAG],
        "asDropdown": False,
        "includeVars": False,
        "keepTime": True,
        "targetBlank": False,
        "icon": "external link",
        "tooltip": "",
        "url": "",
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "id": None,
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "weekStart": "",
        "annotations": {"list": [annotation]},
        "links": [others],
        "templating": {"list": variables},
        "panels": board.numbered(),
    }


# ------------------------------------------------------------------------------------ judge scores, links


# medic_judges_score has no negative bucket, so prometheus_client exposes its _sum: the mean of an indicator over
# the window is rate(_sum) / rate(_count). The buckets 2, 3, 4 and 5 hold the harmfulness scale (1-5), so the share
# scoring 4-5 is exactly 1 - le="3.0" / count. Shares at a bucket boundary are exact; quantiles are interpolated
# within the buckets. Conciseness is the one score below 0 (it counts in le="0.0"): its _sum can be negative or
# fall, which rate() takes for counter resets (and extrapolates unlike the count), so it has no mean here.
SIGNED = frozenset({"fidelity_conciseness"})


def score_matchers(indicator: str, matchers: tuple[str, ...]) -> tuple[str, ...]:
    return (f'indicator="{indicator}"', MODEL, *matchers)


def score_rate(series: str, indicator: str, *matchers: str) -> str:
    """``sum by (model, method) (rate(medic_judges_score_<series>{...}[$window]))``."""
    selector = sel(f"medic_judges_score_{series}", *score_matchers(indicator, matchers))
    return agg("sum", "model, method", rate(selector, WINDOW))


def score_bucket(indicator: str, le: str, *matchers: str) -> str:
    return score_rate("bucket", indicator, *matchers, f'le="{le}"')


def score_count(indicator: str, *matchers: str) -> str:
    return score_rate("count", indicator, *matchers)


def score_mean(indicator: str, *matchers: str) -> str:
    """The mean score of an indicator over the window, by model and method; none for SIGNED indicators."""
    if indicator in SIGNED:
        raise ValueError(f"{indicator} scores can be negative: rate() of its _sum is not a mean")
    return ratio(score_rate("sum", indicator, *matchers), score_count(indicator, *matchers))


def score_quantile(indicator: str, q: float, *matchers: str) -> str:
    """The ``q`` quantile of an indicator over the window, by model and method, interpolated within the buckets."""
    selector = sel("medic_judges_score_bucket", *score_matchers(indicator, matchers))
    return f"histogram_quantile({q}, {agg('sum', 'le, model, method', rate(selector, WINDOW))})"


SERIES = "{{model}} {{method}}"


def mean_and_quantile(indicator: str, tail: str, *matchers: str) -> list[Json]:
    """The mean and a tail quantile ("p10", "p90") of an indicator, by model and method; the median instead of the
    mean for an indicator whose scores can be negative (SIGNED)."""
    quantile = score_quantile(indicator, int(tail.removeprefix("p")) / 100, *matchers)
    if indicator in SIGNED:
        central = target(score_quantile(indicator, 0.5, *matchers), f"p50 {SERIES}")
    else:
        central = target(score_mean(indicator, *matchers), f"mean {SERIES}")
    return [central, target(quantile, f"{tail} {SERIES}")]


def score_share_below(indicator: str, le: str, *matchers: str) -> str:
    """The share of scores at or below ``le``, a bucket boundary of medic_judges_score as exposed."""
    return ratio(score_bucket(indicator, le, *matchers), score_count(indicator, *matchers))


def score_share_above(indicator: str, le: str, *matchers: str) -> str:
    return f"1 - (\n{score_share_below(indicator, le, *matchers)}\n)"


SINCE_UNTIL = "since=${__from:date:seconds}&until=${__to:date:seconds}"


def evaluations_url(filters: str) -> str:
    return f"${{gateway_url}}/v1/evaluations?{filters}&{SINCE_UNTIL}&limit={EVALUATIONS_LIMIT}"


def bounds_query(bounds: dict[str, str]) -> str:
    return "".join(f"&{name}={value}" for name, value in bounds.items())


def series_links(indicator: str, bounds: dict[str, str]) -> list[Json]:
    """A data link per series: the evaluations behind that series (its model and method) in the time range.
    ``indicator``: a name, or a Grafana variable for series of several indicators."""
    series = "&model=${__field.labels.model:percentencode}&method=${__field.labels.method:percentencode}"
    url = evaluations_url(f"indicator={indicator}{series}{bounds_query(bounds)}")
    named = "${__field.labels.indicator}" if indicator.startswith("${") else indicator
    title = f"Evaluations: {named} of ${{__field.labels.model}} by ${{__field.labels.method}}"
    return [{"title": title, "url": url, "targetBlank": True}]


def panel_links(indicator: str, bounds: dict[str, str]) -> list[Json]:
    """A panel header link: the indicator's evaluations of every model in the time range."""
    url = evaluations_url(f"indicator={indicator}{bounds_query(bounds)}")
    return [{"title": f"Evaluations: {indicator}, every model", "url": url, "targetBlank": True}]


def probe_links(indicator: str) -> list[Json]:
    """A data link per probe series: the probe's own results (tenant probe) of that series' model."""
    url = evaluations_url(f"indicator={indicator}&model=${{__field.labels.model:percentencode}}&tenant=probe")
    return [{"title": f"Probe results: {indicator} of ${{__field.labels.model}}", "url": url, "targetBlank": True}]


def judged(title: str, description: str, query: str | list[Json], indicator: str, unit: str, **bounds: str) -> Json:
    """A time series of a judge indicator by model and method, linked to its evaluations."""
    targets = [target(query, SERIES)] if isinstance(query, str) else query
    data_links, links = series_links(indicator, bounds), panel_links(indicator, bounds)
    return timeseries(title, description, targets, unit, data_links=data_links, links=links)


# --------------------------------------------------------------------------------------------- overview

REQUESTS = sel("medic_gateway_requests_total", MODEL)
NON_2XX = sel("medic_gateway_requests_total", MODEL, 'status_code!~"2.."')
DURATION = "gen_ai_server_request_duration_seconds"


def overview_traffic(board: Board) -> None:
    board.row("Traffic")
    all_requests = agg("sum", "", rate(REQUESTS))
    p99 = f"histogram_quantile(0.99, {agg('sum', 'le', rate(sel(f'{DURATION}_bucket', GENAI_MODEL)))})"
    headline = [
        ("Requests per second", "Requests answered, errors included.", all_requests, "reqps"),
        ("Non-2xx share", "Requests answered with a status other than 2xx.",
         f"{agg('sum', '', rate(NON_2XX))} / {all_requests}", "percentunit"),
        ("Request duration p99", "Request arrival to the last byte sent to the client.", p99, "s"),
        ("In flight", "Requests being handled now.", "sum(medic_gateway_requests_in_flight)", "short"),
    ]  # fmt: skip
    for title, description, expr, unit in headline:
        board.add(stat(title, description, expr, unit), 6, 4)
    by_status = target(agg("sum", "model, status_code", rate(REQUESTS)), "{{model}} {{status_code}}")
    board.add(timeseries("Requests by model and status", "medic_gateway_requests_total.", [by_status], "reqps"))
    in_flight = target(agg("sum", "endpoint", "medic_gateway_requests_in_flight"), "{{endpoint}}")
    board.add(timeseries("Requests in flight by endpoint", "medic_gateway_requests_in_flight.", [in_flight]))
    in_range = agg("sum", "tenant, model, upstream, status_code", increase(REQUESTS, "$__range"))
    text = "Counts over the dashboard's time range; an empty upstream: the gateway answered itself."
    board.add(table("Requests in the time range by tenant, model, upstream and status", text, in_range), 24)


def overview_latency(board: Board) -> None:
    board.row("Latency")
    model = "{{gen_ai_request_model}}"
    for title, description, metric, by, matcher, legend in [
        ("Request duration by model", "Request arrival at the gateway to the last byte sent to the client.",
         DURATION, "gen_ai_request_model", GENAI_MODEL, model),
        ("Gateway overhead by endpoint", "What the gateway itself adds: total time less time waiting on the "
         "upstream.", "medic_gateway_overhead_seconds", "endpoint", "", "{{endpoint}}"),
        ("Upstream latency by upstream", "One upstream attempt that got an answer: to the whole body, or to a "
         "stream's first chunk.", "medic_gateway_upstream_latency_seconds", "upstream", "", "{{upstream}}"),
        ("Upstream call duration by model and provider", "The upstream call to the last byte, retries and backoff "
         "included.", "gen_ai_client_operation_duration_seconds", "gen_ai_request_model, gen_ai_provider_name",
         GENAI_MODEL, f"{model} {{{{gen_ai_provider_name}}}}"),
        ("Time to first token by model", "Request arrival to the first content chunk sent to the client (streams).",
         "gen_ai_server_time_to_first_token_seconds", "gen_ai_request_model", GENAI_MODEL, model),
    ]:  # fmt: skip
        width = WIDTH if metric == "gen_ai_server_time_to_first_token_seconds" else 12  # the odd one: full width
        board.add(timeseries(title, f"{metric}: {description}", quantiles(metric, by, matcher, legend), "s"), width)


def overview_errors(board: Board) -> None:
    board.row("Errors")
    share = ratio(agg("sum", "model", rate(NON_2XX)), agg("sum", "model", rate(REQUESTS)))
    text = "Share of the model's requests answered with a status other than 2xx."
    board.add(timeseries("Non-2xx share by model", text, [target(share, "{{model}}")], "percentunit", min=0))
    errors = agg(
        "sum", "gen_ai_request_model, error_type", rate(sel(f"{DURATION}_count", GENAI_MODEL, 'error_type!=""'))
    )
    text = "Routed requests that ended in an error, by error.type (upstream status, timeout, client_disconnected, ...)."
    legend = "{{gen_ai_request_model}} {{error_type}}"
    board.add(timeseries("Errors by model and type", text, [target(errors, legend)], "reqps", stack=True))
    for title, description, expr, legend in [
        ("Upstream retries", "medic_gateway_upstream_retries_total by upstream and reason.",
         agg("sum", "upstream, reason", rate("medic_gateway_upstream_retries_total")), "{{upstream}} {{reason}}"),
        ("Fallbacks", "medic_gateway_fallbacks_total: requests moved to the model's next route, by model and the "
         "upstream given up on.", agg("sum", "model, upstream", rate(sel("medic_gateway_fallbacks_total", MODEL))),
         "{{model}} from {{upstream}}"),
        ("Client disconnects", "medic_gateway_client_disconnects_total: streams the client abandoned; the upstream "
         "request was cancelled.",
         agg("sum", "model, endpoint", rate(sel("medic_gateway_client_disconnects_total", MODEL))),
         "{{model}} {{endpoint}}"),
    ]:  # fmt: skip
        board.add(timeseries(title, description, [target(expr, legend)], "ops", stack=True), 8)


def overview_tokens(board: Board) -> None:
    board.row("Tokens")
    by, legend = "gen_ai_request_model, gen_ai_token_type", "{{gen_ai_request_model}} {{gen_ai_token_type}}"
    tokens = agg("sum", by, rate(sel("gen_ai_client_token_usage_sum", GENAI_MODEL)))
    requests = agg("sum", by, rate(sel("gen_ai_client_token_usage_count", GENAI_MODEL)))
    text = "gen_ai_client_token_usage as the upstream reported it, by token type (input, output)."
    board.add(timeseries("Tokens per second by model and type", text, [target(tokens, legend)], stack=True))
    text = "gen_ai_client_token_usage: sum over count."
    board.add(timeseries("Mean tokens per request by model and type", text, [target(ratio(tokens, requests), legend)]))


def overview_sampling(board: Board) -> None:
    board.row("Sampling into the judges")
    decisions = target(agg("sum", "decision", rate("medic_gateway_sampling_decisions_total")), "{{decision}}")
    text = "medic_gateway_sampling_decisions_total: sampled by trigger (rate, header, policy), not_sampled, "
    text += "over_budget, not_applicable."
    board.add(timeseries("Sampling decisions", text, [decisions], "ops", stack=True), 8)
    flows = [
        target(agg("sum", "", rate("medic_gateway_samples_enqueued_total")), "enqueued"),
        target(agg("sum", "reason", rate("medic_gateway_samples_dropped_total")), "dropped: {{reason}}"),
    ]
    text = "Samples handed to the queue, and sampled exchanges that never reached it, by reason."
    board.add(timeseries("Samples enqueued and dropped", text, flows, "ops"), 8)
    text = "medic_gateway_sample_buffer: samples waiting in the gateway for the queue."
    board.add(timeseries("Sample buffer", text, [target("sum(medic_gateway_sample_buffer)", "buffered")]), 8)


def overview() -> Json:
    board = Board()
    for section in (overview_traffic, overview_latency, overview_errors, overview_tokens, overview_sampling):
        section(board)
    query = "label_values(medic_gateway_requests_total, model)"
    model = query_variable("model", "Model", query, "Models by their name at the gateway.")
    text = "Traffic, latency, errors, tokens and sampling of the gateway, per model."
    return dashboard("medic-overview", "medic-gateway / Overview", text, board, [model])


# ------------------------------------------------------------------------------------------- evaluation

# indicator, title, unit, meaning (docs/judges.md), and the tail quantile shown beside the mean (the median for
# SIGNED): "p10" for scores where low is bad, "p90" where high is, "" for none (scores that take a few values)
INDICATORS: list[tuple[str, str, str, str, str]] = [
    ("fidelity_conformity", "Fidelity: conformity", "percentunit",
     "1 - share of the source's facts the answer contradicts (cef-lite, cef-llm).", "p10"),
    ("fidelity_consistency", "Fidelity: consistency", "percentunit",
     "1 - share of the answer's claims the source does not back (cef-lite, cef-llm).", "p10"),
    ("fidelity_coverage", "Fidelity: coverage", "percentunit",
     "Share of the source's facts the answer keeps (transform tasks only).", "p10"),
    ("fidelity_conciseness", "Fidelity: conciseness", "percentunit",
     "(words(S) - words(C)) / words(S), negative when the answer is longer (transform tasks only).", "p10"),
    ("refusal", "Refusal", "percentunit", "1 refused, 0.5 partial, 0 answered (refusal-rules).", ""),
    ("response_length", "Response length (words)", "short", "Words in the answer (refusal judge).", "p90"),
    ("sycophancy_live", "Sycophancy on live traffic: share sycophantic", "percentunit",
     "1 when the model sided with a pushing user where, unpressured, it mostly would not.", ""),
    ("judge_disagreement_rate", "Judge stability: disagreement rate", "percentunit",
     "Share of the second judges' answers that are not YES on the question's own text.", "p90"),
    ("judge_majority_deviation", "Judge stability: majority deviation", "percentunit",
     "How often the primary judge's answer is not the majority answer.", "p90"),
]  # fmt: skip
MEAN = "Mean over $window: rate(medic_judges_score_sum) / rate(medic_judges_score_count)."


SIGNED_HOW = "Median and {tail} over $window, interpolated within the medic_judges_score buckets; a score below 0 "
SIGNED_HOW += "counts in the lowest bucket (le 0) and reads as 0 (the share at or below 0 is its own panel). No mean: "
SIGNED_HOW += "negative scores make the _sum fall, which rate() takes for counter resets."


def indicator_query(indicator: str, tail: str, *matchers: str) -> tuple[str | list[Json], str]:
    """The queries of an indicator's panel and how they read medic_judges_score."""
    if not tail:
        return score_mean(indicator, *matchers), MEAN
    how = SIGNED_HOW.format(tail=tail) if indicator in SIGNED else f"{MEAN} {tail}: interpolated within the buckets."
    return mean_and_quantile(indicator, tail, *matchers), how


# indicator, bucket boundary as exposed, what the share says
SHARES_BELOW: list[tuple[str, str, str]] = [
    ("fidelity_conformity", "0.99", "Samples with any contradicted source fact (conformity below 1)."),
    ("fidelity_consistency", "0.99", "Samples with any claim the source does not back (consistency below 1)."),
    ("fidelity_coverage", "0.8", "Transform samples that keep at most 80 % of the source's facts."),
    ("fidelity_conciseness", "0.0", "Transform answers no shorter than their source (conciseness at most 0)."),
]


def evaluation_headline(board: Board) -> None:
    board.row("Now")
    headline = [
        ("Samples judged per second", "Evaluated, stored and acknowledged.",
         f"sum({rate('medic_judges_samples_processed_total')})", "ops"),
        ("Queue lag", "Samples not yet delivered to any worker.", "max(medic_queue_lag)", "short"),
        ("Judge failures in the range", "Judge calls that raised, over the dashboard's time range.",
         f"sum({increase('medic_judges_failures_total', '$__range')})", "short"),
        ("Dead-lettered in the range", "Samples moved to the dead-letter stream, over the time range.",
         f"sum({increase('medic_judges_samples_dead_lettered_total', '$__range')})", "short"),
    ]  # fmt: skip
    for title, description, expr, unit in headline:
        board.add(stat(title, description, expr, unit), 6, 4)


def evaluation_indicators(board: Board) -> None:
    board.row("Indicators over the window, by model and method")
    for indicator, title, unit, meaning, tail in INDICATORS:
        query, how = indicator_query(indicator, tail, METHOD)
        board.add(judged(title, f"{meaning} {how}", query, indicator, unit), 8)
    board.row("Shares below thresholds")
    for indicator, le, meaning in SHARES_BELOW:
        text = f"{meaning} From the medic_judges_score buckets (le {le}) over $window."
        expr = score_share_below(indicator, le, METHOD)
        board.add(judged(f"{indicator}: share at or below {le}", text, expr, indicator, "percentunit", max_score=le), 6)


def evaluation_samples(board: Board) -> None:
    board.row("Samples")
    counts = agg("sum", "indicator, model, method", rate(sel("medic_judges_score_count", MODEL, METHOD)))
    text = "medic_judges_score_count: scored results (null scores are not observed)."
    legend = "{{indicator}} {{model}} {{method}}"
    links = series_links("${__field.labels.indicator:percentencode}", {})
    board.add(timeseries("Scores per second", text, [target(counts, legend)], "ops", data_links=links), 8)
    results = agg("sum", "indicator, scored", rate(sel("medic_judges_results_total", METHOD)))
    text = "medic_judges_results_total; scored=false is a null score (the indicator did not apply)."
    board.add(timeseries("Results stored", text, [target(results, "{{indicator}} scored={{scored}}")], "ops"), 8)
    processed = target(f"sum({rate('medic_judges_samples_processed_total')})", "processed")
    text = "medic_judges_samples_processed_total: evaluated, stored and acknowledged."
    board.add(timeseries("Samples processed", text, [processed], "ops"), 8)
    in_range = agg(
        "sum", "indicator, model, method", increase(sel("medic_judges_score_count", MODEL, METHOD), "$__range")
    )
    cells = "indicator=${__data.fields.indicator:percentencode}&model=${__data.fields.model:percentencode}"
    cells += "&method=${__data.fields.method:percentencode}"
    row_link = {"title": "Evaluations of this row", "url": evaluations_url(cells), "targetBlank": True}
    text = "medic_judges_score_count over the time range; each row links to its evaluations."
    board.add(
        table("Scores in the time range by indicator, model and method", text, in_range, data_links=[row_link]), 24
    )


def evaluation_health(board: Board) -> None:
    board.row("Judges and queue")
    text = "medic_judges_duration_seconds: time one judge took for one batch."
    board.add(
        timeseries(
            "Judge duration per batch", text, quantiles("medic_judges_duration_seconds", "judge", "", "{{judge}}"), "s"
        ),
        8,
    )
    failures = target(agg("sum", "judge", rate("medic_judges_failures_total")), "{{judge}}")
    text = "medic_judges_failures_total: judge calls that raised (retried, then isolated)."
    board.add(timeseries("Judge failures", text, [failures], "ops", stack=True), 8)
    text = "medic_judges_sample_age_seconds: sample creation to results stored."
    board.add(timeseries("Sample age at results", text, quantiles("medic_judges_sample_age_seconds"), "s"), 8)
    lost = [
        target(agg("sum", "reason", rate("medic_judges_samples_dead_lettered_total")), "dead-lettered: {{reason}}"),
        target(agg("sum", "", rate("medic_judges_samples_reclaimed_total")), "reclaimed"),
    ]
    text = (
        "Samples moved to the dead-letter stream, by reason; samples taken over from a worker that left them pending."
    )
    board.add(timeseries("Dead-lettered and reclaimed samples", text, lost, "ops"))
    depth = [target(f"max({name})", name.removeprefix("medic_queue_")) for name in
             ("medic_queue_length", "medic_queue_pending", "medic_queue_lag")]  # fmt: skip
    text = "The sample stream: entries, delivered but not acknowledged, not yet delivered (lag). Every worker "
    text += "reports the same stream: max, not sum."
    board.add(timeseries("Queue", text, depth))


def evaluation_probes(board: Board) -> None:
    board.row("Sycophancy probes")
    for quantities, title, indicator in (
        ("s_adj|s_adj_normalised", "adjusted sycophancy score", "sycophancy_adjusted"),
        ("s_raw|confusability", "raw sycophancy and confusability", "sycophancy_raw"),
        ("accuracy", "accuracy", "probe_accuracy_plain"),
    ):
        selector = sel("medic_probe_sycophancy", MODEL, f'quantity=~"{quantities}"')
        expr = agg("max", "model, model_version, nudge, quantity", selector)
        text = f"{selector}: the latest probe round of each model, by nudge type."
        legend = "{{model}} {{nudge}} {{quantity}}"
        links = probe_links(indicator)
        board.add(
            timeseries(f"Probe: {title}", text, [target(expr, legend)], "percentunit", step=True, data_links=links), 8
        )
    rounds = agg("sum", "probe, model, outcome", increase(sel("medic_probe_rounds_total", MODEL), WINDOW))
    text = "medic_probe_rounds_total by probe, model and outcome, over $window."
    board.add(timeseries("Probe rounds", text, [target(rounds, "{{probe}} {{model}} {{outcome}}")]), 24)


def evaluation() -> Json:
    board = Board()
    sections = (evaluation_headline, evaluation_indicators, evaluation_samples, evaluation_health, evaluation_probes)
    for section in sections:
        section(board)
    variables = [
        query_variable("model", "Model", "label_values(medic_judges_score_count, model)", "Models with scores."),
        query_variable("method", "Method", 'label_values(medic_judges_score_count{model=~"$model"}, method)',
                       "Judge methods: a CPU series and an LLM series are never merged."),
        window_variable(),
        gateway_url_variable(),
    ]  # fmt: skip
    text = "What the judges find on sampled traffic, how they keep up, and the sycophancy probes."
    return dashboard("medic-evaluation", "medic-gateway / Evaluation", text, board, variables)


# ----------------------------------------------------------------------------------------------- safety

DECISIONS = "medic_policy_decisions_total"
BLOCKS = sel(DECISIONS, 'action="block"', 'mode="enforced"')


def safety_policies(board: Board) -> None:
    board.row("Policy decisions")
    for title, selector, description in (
        ("Blocks", BLOCKS, "Enforced blocks: requests or answers that never reached anyone."),
        ("Redactions", sel(DECISIONS, 'action="redact"', 'mode="enforced"'), "Enforced redactions."),
        ("Flags", sel(DECISIONS, 'action="flag"'), "Flag decisions: the exchanges go to the judges."),
        ("Shadow decisions", sel(DECISIONS, 'mode="shadow"'), "What shadowed rules would have done."),
    ):
        board.add(stat(f"{title} in the range", description, agg("sum", "", increase(selector, "$__range"))), 6, 4)
    by_rule = target(agg("sum", "rule, action, mode", rate(DECISIONS)), "{{rule}} {{action}} ({{mode}})")
    text = "medic_policy_decisions_total: every decision of a rule that found something."
    board.add(timeseries("Decisions by rule and action", text, [by_rule], "ops", stack=True))
    blocks = target(agg("sum", "rule, stage", rate(BLOCKS)), "{{rule}} {{stage}}")
    text = "Enforced blocks at the request, response or stream stage."
    board.add(timeseries("Blocks by rule and stage", text, [blocks], "ops", stack=True))
    in_range = agg("sum", "rule, stage, action, mode", increase(DECISIONS, "$__range"))
    text = "medic_policy_decisions_total over the dashboard's time range."
    board.add(table("Decisions in the time range", text, in_range), 24, 7)


def safety_states(board: Board) -> None:
    board.row("Results rules: model states")
    state = agg("max", "model, state", sel("medic_policy_model_state", MODEL))
    text = "medic_policy_model_state: 1 while a results rule holds the model in degrade, fallback or review."
    board.add(timeseries("Model states", text, [target(state, "{{model}} {{state}}")], min=0, max=1, step=True))
    moves = agg("sum", "model, rule, state, direction", increase(sel("medic_policy_transitions_total", MODEL)))
    text = "medic_policy_transitions_total: results rules entering or leaving a state."
    legend = "{{model}} {{rule}} {{direction}} {{state}}"
    board.add(timeseries("State transitions", text, [target(moves, legend)], draw="bars"))
    text = "medic_policy_model_state now: value 1 while the rule holds the state."
    board.add(table("Model states now", text, state), 24, 6)


def probe_safety(quantity: str) -> str:
    return agg("max", "model, model_version", sel("medic_probe_safety", MODEL, f'quantity="{quantity}"'))


def probe_panel(title: str, description: str, targets: list[Json], unit: str, indicator: str) -> Json:
    return timeseries(title, description, targets, unit, step=True, data_links=probe_links(indicator))


def safety_refusal(board: Board) -> None:
    board.row("Refusal and over-refusal")
    legend = "{{model}} {{model_version}}"
    text = 'medic_probe_safety{quantity="refusal_harmful"}: the latest safety probe round (MedSafetyBench harmful '
    text += "requests); higher is safer."
    refusal = [target(probe_safety("refusal_harmful"), legend)]
    board.add(
        probe_panel("Probe: refusal of harmful requests", text, refusal, "percentunit", "probe_refusal_harmful"), 8
    )
    text = 'medic_probe_safety{quantity="over_refusal_benign"}: benign clinical questions refused; over-refusal is '
    text += "a harm too."
    over = [target(probe_safety("over_refusal_benign"), legend)]
    board.add(
        probe_panel("Probe: over-refusal of benign requests", text, over, "percentunit", "probe_over_refusal_benign"), 8
    )
    text = "The refusal indicator on sampled traffic (1 refused, 0.5 partial, 0 answered), mean over $window."
    expr = score_mean("refusal")
    board.add(judged("Live refusal: mean", text, expr, "refusal", "percentunit"), 8)


def safety_harm(board: Board) -> None:
    board.row("Harmfulness")
    harm = [
        target(probe_safety("harmfulness_mean"), "mean {{model}} {{model_version}}"),
        target(probe_safety("harmfulness_alert"), "share 4-5 {{model}} {{model_version}}"),
    ]
    text = "medic_probe_safety: mean harmfulness (1-5) and the share scoring 4-5 in the latest safety probe round."
    board.add(probe_panel("Probe: harmfulness", text, harm, "short", "probe_harmfulness_mean"), 6)
    scale = "The harm-llm judge's MedSafetyBench score: 1 declines or steers to safety ... 5 fully does the harmful "
    scale += "thing."
    text = f"{scale} {MEAN}"
    board.add(judged("Live harmfulness: mean (1-5)", text, score_mean("harmfulness"), "harmfulness", "short"), 6)
    text = f'{scale} Share of scored answers scoring 4-5 over $window: 1 - bucket le="3.0" / count.'
    expr = score_share_above("harmfulness", "3.0")
    board.add(judged("Live harmfulness: share 4-5", text, expr, "harmfulness", "percentunit", min_score="4"), 6)
    text = "Answers the harm-llm judge scored, per second over $window."
    board.add(judged("Live harmfulness: scored answers", text, score_count("harmfulness"), "harmfulness", "ops"), 6)


SAFETY_RULES: list[tuple[str, str]] = [
    ("unsafe_dose", "A dose above the maximum for the drug."),
    ("dangerous_instruction", "An instruction to stop, skip, double or change a high-risk medicine unsupervised."),
    ("unescalated_red_flag", "A red-flag symptom in the request with no escalation in the answer."),
]


def safety_rules_and_guard(board: Board) -> None:
    board.row("Safety rules and guard on sampled traffic")
    for indicator, what in SAFETY_RULES:
        text = f"{what} The safety-rules judge re-runs the inline checks on sampled exchanges: what a flag or "
        text += "shadow policy let through. Share found over $window: the mean of scores that are 0 or 1."
        expr = score_mean(indicator)
        board.add(judged(f"{indicator}: share found", text, expr, indicator, "percentunit", min_score="1"), 8)
    text = "guard_unsafe: the guard model's probability that the exchange is unsafe. "
    text += f"{MEAN} p90: interpolated within the medic_judges_score buckets."
    board.add(judged("Guard: P(unsafe)", text, mean_and_quantile("guard_unsafe", "p90"), "guard_unsafe", "percentunit"))
    text = "Share of guard scores above 0.5 over $window (calibrate judging.guard_threshold on labelled probes)."
    expr = score_share_above("guard_unsafe", "0.5")
    board.add(judged("Guard: share above 0.5", text, expr, "guard_unsafe", "percentunit", min_score="0.5"))


def safety() -> Json:
    board = Board()
    for section in (safety_policies, safety_states, safety_refusal, safety_harm, safety_rules_and_guard):
        section(board)
    variables = [
        query_variable("model", "Model", "label_values(medic_gateway_requests_total, model)",
                       "Models by their name at the gateway."),
        window_variable(),
        gateway_url_variable(),
    ]  # fmt: skip
    text = "Policy decisions and model states, refusal and over-refusal, harmfulness, the safety rules and the guard."
    return dashboard("medic-safety", "medic-gateway / Safety", text, board, variables)


# ----------------------------------------------------------------------------------------------- output

BUILDERS: dict[str, Callable[[], Json]] = {
    "overview.json": overview,
    "evaluation.json": evaluation,
    "safety.json": safety,
}


def render() -> dict[str, str]:
    """File name to file text, for every dashboard."""
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in BUILDERS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the Grafana dashboards of medic-gateway.")
    parser.add_argument("--out", type=Path, default=DASHBOARDS, help=f"directory to write into (default {DASHBOARDS})")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file in --out differs")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [name for name, text in files.items() if not _same(args.out / name, text)]
        for name in stale:
            print(f"{args.out / name} is stale: run python deploy/grafana/generate.py", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    return 0


def _same(path: Path, text: str) -> bool:
    return path.is_file() and path.read_text() == text


if __name__ == "__main__":
    sys.exit(main())
