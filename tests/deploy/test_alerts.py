"""The Prometheus alert rules, their promtool unit tests, the Alertmanager routing and the runbooks.

promtool (Debian package prometheus) and amtool with alertmanager (Debian package prometheus-alertmanager)
must be installed: these tests fail, they do not skip, when they are missing.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
METRICS_DOC = ROOT / "docs" / "metrics.md"

SEVERITIES = {"page", "ticket", "info"}
ANNOTATIONS = {"summary", "description", "runbook_url", "evaluations"}
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}

# PromQL words that are not metric names.
KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "group_left", "group_right"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: install the Debian package {PACKAGES.get(name, name)}")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alerts()]


def promtool_test(test_files: list[Path]) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` on every file, the files in parallel; the outputs joined, the worst status."""
    promtool = tool("promtool")
    with ThreadPoolExecutor() as pool:
        done = list(pool.map(lambda path: run(promtool, "test", "rules", str(path)), test_files))
    return subprocess.CompletedProcess(
        [promtool, "test", "rules"], max(r.returncode for r in done),
        "".join(r.stdout for r in done), "".join(r.stderr for r in done),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules_passes() -> None:
    result = run(tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS, "no promtool tests in deploy/prometheus/tests"
    result = promtool_test(RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS), result.stdout


def rule_test_cases() -> Iterator[dict[str, Any]]:
    for path in RULE_TESTS:
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../alerts.yml"], f"{path.name} must test deploy/prometheus/alerts.yml"
        for group in document["tests"]:
            yield from group.get("alert_rule_test", [])


def test_every_alert_has_a_case_that_fires_it_with_labels_and_annotations_checked() -> None:
    by_name = {rule["alert"]: rule for rule in alerts()}
    fired: set[str] = set()
    for case in rule_test_cases():
        name = case["alertname"]
        assert name in by_name, f"a promtool test names {name}, which alerts.yml does not define"
        for expected in case.get("exp_alerts") or []:
            assert expected["exp_labels"]["severity"] == by_name[name]["labels"]["severity"], case
            assert set(expected["exp_annotations"]) == ANNOTATIONS, case
            fired.add(name)
    assert sorted(set(by_name) - fired) == [], "alerts with no promtool case that fires them"


def test_every_alert_has_a_case_where_it_stays_silent() -> None:
    silent = {case["alertname"] for case in rule_test_cases() if not case.get("exp_alerts")}
    assert sorted(set(alert_names()) - silent) == [], "alerts with no promtool case where they stay silent"


def mutant(tmp_path: Path, expr: str) -> Path:
    """A copy of the alerts and their alert tests in which every alert's expression is ``expr`` (recording
    rules and the tests of recorded series left out: nothing reads them any more)."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        group["rules"] = [{**rule, "expr": expr} for rule in group["rules"] if "alert" in rule]
    (tmp_path / "tests").mkdir()
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    for path in RULE_TESTS:
        tests = yaml.safe_load(path.read_text())
        for group in tests["tests"]:
            group.pop("promql_expr_test", None)
        (tmp_path / "tests" / path.name).write_text(yaml.safe_dump(tests, sort_keys=False))
    return tmp_path


def failed(output: str, silent: bool) -> set[str]:
    """Alert names of failed promtool cases: those that expected silence, or those that expected alerts."""
    expected = r"exp:\[\]," if silent else r"exp:\[\s*0:"
    return set(re.findall(r"alertname: (\w+), time: [^,]+,\s*" + expected, output))


def test_the_firing_cases_fail_when_no_alert_can_fire(tmp_path: Path) -> None:
    copy = mutant(tmp_path, "vector(1) == 0")
    result = promtool_test(sorted((copy / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert sorted(set(alert_names()) - failed(result.stderr + result.stdout, silent=False)) == []


def test_the_silent_cases_fail_when_every_alert_always_fires(tmp_path: Path) -> None:
    copy = mutant(tmp_path, "vector(1)")
    result = promtool_test(sorted((copy / "tests").glob("*.yml")))
    assert result.returncode != 0
    assert sorted(set(alert_names()) - failed(result.stderr + result.stdout, silent=True)) == []


# ---------------------------------------------------------------------------------- alert contents


@pytest.mark.parametrize("name", alert_names())
def test_alert_has_severity_and_annotations(name: str) -> None:
    (rule,) = [rule for rule in alerts() if rule["alert"] == name]
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) == ANNOTATIONS
    assert rule["annotations"]["runbook_url"] == f"docs/runbooks.md#{name.lower()}"
    assert rule["annotations"]["evaluations"].startswith("/v1/evaluations?")
    assert "request_id" not in json.dumps(rule["annotations"])


def evaluations_filters() -> set[str]:
    source = (ROOT / "gateway" / "evaluations.py").read_text()
    found = re.findall(r'"(\w+)"', source.split("TEXT_FILTERS = ", 1)[1].split("\n\n", 1)[0])
    return {*found, "limit"}


def test_evaluations_annotations_use_only_filters_the_gateway_knows() -> None:
    known = evaluations_filters()
    assert {"model", "indicator", "method", "tenant", "min_score", "max_score", "since", "until"} <= known
    for rule in alerts():
        query = rule["annotations"]["evaluations"].split("?", 1)[1]
        names = {pair.split("=", 1)[0] for pair in query.split("&")}
        assert names <= known, (rule["alert"], names - known)


def github_anchor(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown document's headings (lines in fenced code are not headings)."""
    found, fenced = set(), False
    for line in markdown.splitlines():
        fenced ^= line.startswith("```")
        if not fenced and re.match(r"#{1,6} ", line):
            found.add(github_anchor(line.lstrip("#")))
    return found


def test_anchors_are_githubs_and_skip_code() -> None:
    text = "# Runbooks\n```bash\n# not a heading\n```\n### MedicX\n## results.admin_key_env\n### Live (judge `a-b`)\n"
    assert anchors(text) == {"runbooks", "medicx", "resultsadmin_key_env", "live-judge-a-b"}


def test_every_runbook_url_names_an_entry_of_the_runbooks() -> None:
    present = anchors(RUNBOOKS.read_text())
    for rule in alerts():
        path, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert (ROOT / path).resolve() == RUNBOOKS
        assert anchor in present, f"{rule['alert']}: no heading for #{anchor} in docs/runbooks.md"


def test_every_runbook_entry_is_an_alert_and_says_what_to_look_at() -> None:
    text = RUNBOOKS.read_text()
    entries = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    names = {entry.split("\n", 1)[0].strip(): entry for entry in entries}
    assert sorted(names) == sorted(alert_names())
    for name, entry in names.items():
        assert re.search(r"medic-gateway / (Overview|Evaluation|Safety)", entry), name
        assert "```promql" in entry, name
        assert 'curl -s -H "Authorization: Bearer $MEDIC_ADMIN_KEY"' in entry, name
        assert "**Do**" in entry, name


def dashboard_titles() -> set[str]:
    """The titles of the dashboards and of their panels and rows (deploy/grafana/dashboards)."""
    titles = set()
    for path in sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        titles.add(board["title"])
        stack = list(board["panels"])
        while stack:
            panel = stack.pop()
            titles.add(panel["title"])
            stack += panel.get("panels", [])
    return titles


def test_the_dashboards_and_panels_the_runbooks_name_exist() -> None:
    titles = dashboard_titles()
    assert {"medic-gateway / Overview", "medic-gateway / Evaluation", "medic-gateway / Safety"} <= titles
    looks = re.findall(r"\*\*Look first\*\*: (.*?)\n\n", RUNBOOKS.read_text(), flags=re.DOTALL)
    assert len(looks) == len(alert_names())
    for look in looks:
        named = re.findall(r'"([^"]+)"', " ".join(look.split()))
        assert named and set(named) <= titles, sorted(set(named) - titles)


def test_links_of_the_runbooks_resolve() -> None:
    text = RUNBOOKS.read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        path, _, anchor = target.partition("#")
        document = (RUNBOOKS.parent / path).resolve() if path else RUNBOOKS
        assert document.is_file(), target
        if anchor:
            assert anchor in anchors(document.read_text()), target


# ------------------------------------------------------------------------------- metric names


def documented_metrics() -> dict[str, set[str]]:
    """Metric name to its documented labels, from the tables of docs/metrics.md."""
    found: dict[str, set[str]] = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`[a-z_:]+`", cells[0]):
            found[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", cells[2])))
    return found


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """Every metric name in a PromQL expression, with the label names it matches on."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?", expr):
        name, matchers, call = match.groups()
        if call or name in KEYWORDS:
            continue
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers or ""))
        yield name, labels


def test_selectors_find_names_and_labels() -> None:
    expr = 'sum by (model) (rate(a_total{model!~"|x", le="1"}[5m] offset 1d)) / on (model) b:rec > 0.5 and c'
    assert list(selectors(expr)) == [("a_total", {"model", "le"}), ("b:rec", set()), ("c", set())]


def test_every_metric_in_the_rules_is_documented_with_its_labels() -> None:
    documented = documented_metrics()
    assert "medic_judges_score" in documented and documented["medic_judges_score"] == {"indicator", "model", "method"}
    assert documented["medic_gateway_requests_total"] == {"endpoint", "model", "upstream", "tenant", "status_code"}
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set()
    for rule in rules():
        for name, labels in selectors(rule["expr"]):
            if name in recorded:
                continue
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            doc_name = name if name in documented else base
            assert doc_name in documented, f"{name} is not in docs/metrics.md"
            allowed = documented[doc_name] | ({"le"} if name.endswith("_bucket") else set())
            assert labels <= allowed, f"{name}: labels {sorted(labels - allowed)} are not documented"
            used.add(doc_name)
    assert {"medic_judges_score", "medic_queue_lag", "medic_policy_model_state", "medic_probe_safety"} <= used


def test_recorded_series_used_by_alerts_are_recorded() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in alerts():
        for name, _ in selectors(rule["expr"]):
            if ":" in name:
                assert name in recorded, f"{rule['alert']} uses {name}, which no rule records"


# ------------------------------------------------------------------------------------ alertmanager


def test_amtool_check_config_passes() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(("severity", "receiver"), [("page", "pager"), ("ticket", "ticket"), ("info", "info")])
def test_alertmanager_routes_by_severity(severity: str, receiver: str) -> None:
    labels = ["alertname=MedicX", "model=clinical", f"severity={severity}"]
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                 f"--verify.receivers={receiver}", *labels)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_routes_every_severity_the_rules_use() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    routed = {m.split("=", 1)[1].strip('"') for route in config["route"]["routes"] for m in route["matchers"]}
    assert {rule["labels"]["severity"] for rule in alerts()} <= routed
    assert config["route"]["group_by"] == ["alertname", "model"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read()
    return json.loads(text) if text else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """The real Alertmanager on the example configuration, on a free loopback port."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail("alertmanager is not installed: install the Debian package prometheus-alertmanager")
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={ALERTMANAGER}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "alertmanager exited"
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "alertmanager did not become ready"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_a_page_holds_back_the_tickets_of_the_same_model_only(alertmanager: str) -> None:
    def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
        return {"labels": {"alertname": name, "severity": severity, **labels},
                "annotations": {"summary": name}}  # fmt: skip

    http_json(f"{alertmanager}/api/v2/alerts", [
        alert("MedicFidelityConformityLow", "page", model="clinical"),
        alert("MedicFidelityConsistencyLow", "ticket", model="clinical"),
        alert("MedicFidelityConsistencyLow", "ticket", model="triage"),
        alert("MedicQueueLagGrowing", "ticket", job="medic-worker"),
        alert("MedicSamplingOverBudget", "info"),
    ])  # fmt: skip

    def states() -> dict[tuple[str, str], str]:
        found = http_json(f"{alertmanager}/api/v2/alerts")
        return {(a["labels"]["alertname"], a["labels"].get("model", "")): a["status"]["state"] for a in found}

    deadline = time.monotonic() + 15
    while len(current := states()) < 5 or "unprocessed" in current.values():
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    assert current == {
        ("MedicFidelityConformityLow", "clinical"): "active",
        ("MedicFidelityConsistencyLow", "clinical"): "suppressed",
        ("MedicFidelityConsistencyLow", "triage"): "active",
        ("MedicQueueLagGrowing", ""): "active",
        ("MedicSamplingOverBudget", ""): "active",
    }
