"""The Helm chart deploy/helm/medic-gateway, rendered by the real helm binary.

Every manifest of every profile is validated: the core kinds strictly against the Kubernetes OpenAPI schemas
that kubernetes-validate bundles (at the chart's oldest supported Kubernetes and a current one), the custom
resources (KEDA ScaledObject, Prometheus Operator ServiceMonitor and PrometheusRule) by their structure, the
PrometheusRule's groups by promtool, and the configuration file in the ConfigMap by the gateway's own loader.
helm comes from deploy/helm/install-helm.sh (into the virtual environment), or from PATH or $HELM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config import QueueConfig, load_config
from judges.registry import JUDGES

Manifest = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "medic-gateway"
GPU_VALUES = CHART / "values-gpu.yaml"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RELEASE = "medic"
BASE = f"{RELEASE}-medic-gateway"
KUBE_VERSIONS = ("1.27.0", "1.35.0")  # Chart.yaml's kubeVersion floor, and a current release
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
WORKLOADS = ("Deployment", "StatefulSet")
# Every optional part on: the in-chart Redis with a password, KEDA, monitoring, the judge server with a key.
FULL = [
    "--set", "redis.enabled=true",
    "--set", "redis.auth.existingSecret=redis-auth",
    "--set", "workers.keda.enabled=true",
    "--set", "metrics.serviceMonitor.enabled=true",
    "--set", "metrics.prometheusRule.enabled=true",
    "--set", "judgeServer.enabled=true",
    "--set", "judgeServer.apiKey.secretName=judge-key",
    "--set", "gateway.adminKey.secretName=admin-key",
    "--set", "gateway.autoscaling.enabled=false",
]  # fmt: skip
PROFILES: dict[str, list[str]] = {"default": [], "gpu": ["-f", str(GPU_VALUES)], "full": FULL}


def _helm_binary() -> str:
    candidates = [os.environ.get("HELM", ""), str(Path(sys.executable).parent / "helm"), shutil.which("helm") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("helm is not installed: run deploy/helm/install-helm.sh (scripts/test does), or set HELM")


@pytest.fixture(scope="module")
def helm() -> str:
    return _helm_binary()


def _run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def render(helm: str, *args: str, kube_version: str = KUBE_VERSIONS[-1]) -> list[Manifest]:
    result = _run_helm(helm, "template", RELEASE, str(CHART), "--namespace", "clinical", "--kube-version",
                       kube_version, *args)  # fmt: skip
    assert result.returncode == 0, f"helm template {' '.join(args)} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, list[Manifest]]:
    return {name: render(helm, *args) for name, args in PROFILES.items()}


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[tuple[str, str]]:
    return sorted((m["kind"], m["metadata"]["name"]) for m in manifests)


def container(workload: Manifest) -> Manifest:
    containers: list[Manifest] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_names(workload: Manifest) -> set[str]:
    return {item["name"] for item in container(workload).get("env", [])}


def env_value(workload: Manifest, name: str) -> Any:
    (item,) = [item for item in container(workload)["env"] if item["name"] == name]
    return item.get("value", item.get("valueFrom"))


def gateway_config(manifests: list[Manifest]) -> dict[str, Any]:
    text = one(manifests, "ConfigMap", f"{BASE}-config")["data"]["gateway.yaml"]
    config: dict[str, Any] = yaml.safe_load(text)
    return config


def port_named(workload: Manifest, name: str) -> int:
    (port,) = [p["containerPort"] for p in container(workload)["ports"] if p["name"] == name]
    return int(port)


def gpu_limit(workload: Manifest) -> Any:
    return container(workload).get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


# ------------------------------------------------------------------------------------------------ validity


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_core_manifest_is_valid_against_the_kubernetes_schemas(
    helm: str, profile: str, kube_version: str
) -> None:
    manifests = render(helm, *PROFILES[profile], kube_version=kube_version)
    core = [m for m in manifests if (m["apiVersion"], m["kind"]) not in CUSTOM_KINDS]
    assert len(core) >= 8
    problems = []
    for manifest in core:
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{manifest['kind']} {manifest['metadata']['name']}: {error}")
    assert not problems, "\n".join(problems)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The schemas are strict: an unknown field (a typo in a template) is an error, not ignored."""
    probe = {"periodSeconds": 5, "perodSeconds": 5, "httpGet": {"path": "/healthz", "port": "http"}}
    pod = {"containers": [{"name": "x", "livenessProbe": probe}]}
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {}, "template": {"spec": pod}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError, match="perodSeconds"):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[0], strict=True)


def test_every_manifest_carries_the_release_labels_and_namespace(rendered: dict[str, list[Manifest]]) -> None:
    for manifests in rendered.values():
        for manifest in manifests:
            labels = manifest["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == RELEASE
            assert labels["app.kubernetes.io/name"] == "medic-gateway"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert manifest["metadata"]["namespace"] == "clinical"  # the release's, for `helm template | kubectl`


@pytest.mark.parametrize("values", [[], ["-f", str(GPU_VALUES)]], ids=["default", "gpu"])
def test_helm_lint_passes(helm: str, values: list[str]) -> None:
    result = _run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# ---------------------------------------------------------------------------------------------- profiles


def test_the_default_profile_is_the_gateway_and_cpu_workers_on_an_external_redis(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["default"]
    assert kinds(manifests) == [
        ("ConfigMap", f"{BASE}-config"),
        ("Deployment", f"{BASE}-gateway"),
        ("Deployment", f"{BASE}-worker"),
        ("HorizontalPodAutoscaler", f"{BASE}-gateway"),
        ("PodDisruptionBudget", f"{BASE}-gateway"),
        ("Service", f"{BASE}-gateway"),
        ("Service", f"{BASE}-worker"),
        ("ServiceAccount", BASE),
    ]
    for kind in WORKLOADS:
        for workload in (m for m in manifests if m["kind"] == kind):
            assert gpu_limit(workload) is None
            assert "nodeSelector" not in workload["spec"]["template"]["spec"]
    assert env_value(one(manifests, "Deployment", f"{BASE}-gateway"), "MEDIC_REDIS_URL") == "redis://redis:6379/0"
    assert "judging" not in gateway_config(manifests)


def test_the_gpu_profile_puts_workers_and_the_vllm_judge_server_on_gpus(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["gpu"]
    gpu_values = yaml.safe_load(GPU_VALUES.read_text(encoding="utf-8"))
    gateway = one(manifests, "Deployment", f"{BASE}-gateway")
    worker = one(manifests, "Deployment", f"{BASE}-worker")
    judge = one(manifests, "Deployment", f"{BASE}-judge")
    assert gpu_limit(gateway) is None
    assert gpu_limit(worker) == gpu_values["workers"]["gpu"]["count"]
    assert gpu_limit(judge) == gpu_values["judgeServer"]["gpus"]
    for workload, values in ((worker, gpu_values["workers"]), (judge, gpu_values["judgeServer"])):
        pod = workload["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == values["nodeSelector"]
        assert pod["tolerations"] == values["tolerations"]
    vllm = container(judge)
    assert vllm["image"].startswith("vllm/vllm-openai:")
    args = vllm["args"]
    assert args[args.index("--model") + 1] == gpu_values["judgeServer"]["model"]
    assert args[args.index("--port") + 1] == "8000"
    assert {vllm["startupProbe"]["httpGet"]["path"], vllm["readinessProbe"]["httpGet"]["path"]} == {"/health"}
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in judge["spec"]["template"]["spec"]["volumes"])
    assert one(manifests, "PersistentVolumeClaim", f"{BASE}-judge-cache")
    # The workers and the gateway judge with the model the server serves, through its Service.
    service = one(manifests, "Service", f"{BASE}-judge")
    llm = gateway_config(manifests)["judging"]["llm"]
    assert llm["base_url"] == f"http://{BASE}-judge:{service['spec']['ports'][0]['port']}/v1"
    assert llm["model"] == args[args.index("--served-model-name") + 1]
    assert service["spec"]["selector"].items() <= judge["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "http" and port_named(judge, "http") == 8000


def test_the_judge_server_is_off_by_default_and_its_key_reaches_the_judges(rendered: dict[str, list[Manifest]]) -> None:
    assert not [m for m in rendered["default"] if m["metadata"]["name"].endswith("-judge")]
    full = rendered["full"]
    assert gateway_config(full)["judging"]["llm"]["api_key_env"] == "JUDGE_API_KEY"
    key = {"secretKeyRef": {"name": "judge-key", "key": "api-key"}}
    assert env_value(one(full, "Deployment", f"{BASE}-judge"), "VLLM_API_KEY") == key
    for name in ("gateway", "worker"):
        assert env_value(one(full, "Deployment", f"{BASE}-{name}"), "JUDGE_API_KEY") == key


def test_the_in_chart_redis_keeps_an_append_only_file_on_a_volume(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["full"]
    redis = one(manifests, "StatefulSet", f"{BASE}-redis")
    args = container(redis)["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert args[args.index("--maxmemory") + 1] == "1gb"
    assert args[args.index("--dir") + 1] == "/data"
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert {"name": "data", "mountPath": "/data"} in container(redis)["volumeMounts"]
    service = one(manifests, "Service", f"{BASE}-redis")
    assert service["spec"]["selector"].items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert one(manifests, "Service", redis["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    for name in ("gateway", "worker"):
        workload = one(manifests, "Deployment", f"{BASE}-{name}")
        url = env_value(workload, "MEDIC_REDIS_URL")
        assert url == f"redis://:$(REDIS_PASSWORD)@{BASE}-redis:6379/0"
        names = [item["name"] for item in container(workload)["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("MEDIC_REDIS_URL")  # $(VAR) needs it defined before


# --------------------------------------------------------------------------------------- pods and probes


def workloads(rendered: dict[str, list[Manifest]]) -> Iterator[tuple[str, Manifest]]:
    for profile, manifests in rendered.items():
        for manifest in manifests:
            if manifest["kind"] in WORKLOADS:
                yield profile, manifest


def test_every_pod_runs_as_a_non_root_user_without_privileges(rendered: dict[str, list[Manifest]]) -> None:
    seen = set()
    for _, workload in workloads(rendered):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["automountServiceAccountToken"] is False
        security = container(workload)["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        seen.add(workload["metadata"]["name"])
    assert seen == {f"{BASE}-{name}" for name in ("gateway", "worker", "judge", "redis")}


def test_gateway_and_workers_run_the_two_subcommands_of_the_project_image(rendered: dict[str, list[Manifest]]) -> None:
    version = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))["appVersion"]
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for profile, manifests in rendered.items():
        gateway = container(one(manifests, "Deployment", f"{BASE}-gateway"))
        worker = container(one(manifests, "Deployment", f"{BASE}-worker"))
        assert gateway["image"] == f"medic-gateway:{version}"
        # The GPU profile's workers run the Dockerfile's `gpu` target, tagged VERSION-gpu.
        assert worker["image"] == f"medic-gateway:{version}-gpu" if profile == "gpu" else gateway["image"]
        assert gateway["args"][:3] == ["serve", "--config", "/etc/medic-gateway/gateway.yaml"]
        assert worker["args"][:3] == ["worker", "--config", "/etc/medic-gateway/gateway.yaml"]
        assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
        for mounts in (gateway["volumeMounts"], worker["volumeMounts"]):
            assert {m["mountPath"] for m in mounts} >= {"/etc/medic-gateway", "/var/lib/medic-gateway", "/tmp"}


def test_probes_ask_the_gateway_and_the_workers_on_the_ports_their_configuration_sets(
    rendered: dict[str, list[Manifest]],
) -> None:
    for manifests in rendered.values():
        config = gateway_config(manifests)
        gateway = one(manifests, "Deployment", f"{BASE}-gateway")
        assert port_named(gateway, "http") == config["server"]["port"]
        assert container(gateway)["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container(gateway)["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container(gateway)["resources"]["requests"]["cpu"]
        worker = one(manifests, "Deployment", f"{BASE}-worker")
        assert port_named(worker, "metrics") == config["worker"]["port"]
        assert container(worker)["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container(worker)["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        annotations = gateway["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(config["server"]["port"])


def test_the_gateway_scales_on_cpu_and_keeps_a_replica_through_disruptions(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["default"]
    gateway = one(manifests, "Deployment", f"{BASE}-gateway")
    assert "replicas" not in gateway["spec"]  # the autoscaler owns it
    hpa = one(manifests, "HorizontalPodAutoscaler", f"{BASE}-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{BASE}-gateway"}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    pdb = one(manifests, "PodDisruptionBudget", f"{BASE}-gateway")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"]
    assert one(rendered["full"], "Deployment", f"{BASE}-gateway")["spec"]["replicas"] == 2


# ---------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_configmap_holds_a_configuration_the_gateway_accepts(
    rendered: dict[str, list[Manifest]], profile: str, tmp_path: Path
) -> None:
    manifests = rendered[profile]
    path = tmp_path / "gateway.yaml"
    path.write_text(one(manifests, "ConfigMap", f"{BASE}-config")["data"]["gateway.yaml"], encoding="utf-8")
    check = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True,
                           text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert f"{path}: ok" in check.stdout
    config = load_config(path)
    assert config.server.host == "0.0.0.0" and config.worker.host == "0.0.0.0"
    assert config.policies.audit_path == "/dev/stdout"
    # Every variable the configuration names is set on the containers that need it.
    gateway = one(manifests, "Deployment", f"{BASE}-gateway")
    worker = one(manifests, "Deployment", f"{BASE}-worker")
    needed = {config.queue.redis_url_env, *(k.key_env for k in config.keys), config.results.admin_key_env}
    if config.judging.llm is not None:
        needed.add(config.judging.llm.api_key_env)
    assert needed - {None} <= env_names(gateway)
    assert {config.queue.redis_url_env} <= env_names(worker)
    if config.judging.llm is not None and config.judging.llm.api_key_env:
        assert config.judging.llm.api_key_env in env_names(worker)
    # The workers' judges exist, and those that need a judge model have one.
    assert set(config.worker.judges) <= set(JUDGES)
    if {"harm-llm", "cef-llm", "cef-llm-batch"} & set(config.worker.judges):
        assert config.judging.llm is not None


def test_gateway_keys_come_from_the_secret_one_variable_per_tenant(helm: str) -> None:
    manifests = render(helm, "--set", "gateway.apiKeys.tenants.cardiology=cardio-key",
                       "--set", "gateway.apiKeys.secretName=gateway-keys")  # fmt: skip
    config = gateway_config(manifests)
    assert config["keys"] == [
        {"tenant": "cardiology", "key_env": "MEDIC_GATEWAY_KEY_0"},
        {"tenant": "default", "key_env": "MEDIC_GATEWAY_KEY_1"},
    ]
    gateway = one(manifests, "Deployment", f"{BASE}-gateway")
    assert env_value(gateway, "MEDIC_GATEWAY_KEY_0") == {"secretKeyRef": {"name": "gateway-keys", "key": "cardio-key"}}
    assert env_value(gateway, "MEDIC_GATEWAY_KEY_1") == {"secretKeyRef": {"name": "gateway-keys", "key": "default"}}
    assert not env_names(one(manifests, "Deployment", f"{BASE}-worker")) & {"MEDIC_GATEWAY_KEY_0"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "workers.keda.lagcount=5"], "additional properties 'lagcount' not allowed"),  # values.schema.json
        (["--set", "gateway.port=http"], "/gateway/port"),
        (["--set", "redis.url=http://redis:6379"], "/redis/url"),
        (["--set", "redis.url="], "Redis is required"),
        (["--set", "gateway.apiKeys.tenants=null"], "no gateway keys"),
        (["--set", "workers.keda.enabled=true", "--set", "workers.enabled=false"], "workers.keda.enabled needs"),
        (["--set", "workers.keda.enabled=true", "--set", "workers.keda.lagCount=0",
          "--set", "workers.keda.pendingEntriesCount=0"], "lagCount or workers.keda.pendingEntriesCount"),
        (["--set", "workers.keda.enabled=true", "--set", "redis.existingSecret=url"], "set workers.keda.address"),
    ],
)  # fmt: skip
def test_contradictory_values_fail_with_a_message_naming_them(helm: str, values: list[str], message: str) -> None:
    result = _run_helm(helm, "template", RELEASE, str(CHART), *values)
    assert result.returncode != 0
    assert message in result.stderr


# ------------------------------------------------------------------------------------------ autoscaling


def test_the_scaled_object_scales_the_worker_deployment_on_the_real_stream_and_group(
    rendered: dict[str, list[Manifest]],
) -> None:
    gpu_values = yaml.safe_load(GPU_VALUES.read_text(encoding="utf-8"))["workers"]["keda"]
    defaults = QueueConfig()
    for profile in ("gpu", "full"):
        manifests = rendered[profile]
        scaled = one(manifests, "ScaledObject", f"{BASE}-worker")
        worker = one(manifests, "Deployment", f"{BASE}-worker")
        assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": worker["metadata"]["name"]}  # fmt: skip
        assert "replicas" not in worker["spec"]  # KEDA's autoscaler owns it
        config = gateway_config(manifests)
        triggers = {t["name"]: t for t in scaled["spec"]["triggers"]}
        assert set(triggers) == {"lag", "pending"}
        for trigger in triggers.values():
            metadata = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert all(isinstance(v, str) for v in metadata.values())  # KEDA's trigger metadata is strings
            assert metadata["stream"] == config["queue"]["stream"] == defaults.stream == "medic:samples"
            assert metadata["consumerGroup"] == config["queue"]["group"] == defaults.group == "judges"
        assert triggers["lag"]["metadata"]["lagCount"] == "200"
        assert triggers["pending"]["metadata"]["pendingEntriesCount"] == "64"
        assert "lagCount" not in triggers["pending"]["metadata"]  # KEDA would scale that trigger on lag instead
    gpu = one(rendered["gpu"], "ScaledObject", f"{BASE}-worker")
    assert gpu["spec"]["maxReplicaCount"] == gpu_values["maxReplicaCount"]
    assert gpu["spec"]["triggers"][0]["metadata"]["address"] == "redis:6379"  # from redis.url
    full = one(rendered["full"], "ScaledObject", f"{BASE}-worker")
    worker = one(rendered["full"], "Deployment", f"{BASE}-worker")
    for trigger in full["spec"]["triggers"]:
        assert trigger["metadata"]["address"] == f"{BASE}-redis:6379"
        assert trigger["metadata"]["passwordFromEnv"] in env_names(worker)


def test_the_scaler_reads_address_database_and_tls_from_the_redis_url(helm: str) -> None:
    manifests = render(helm, "--set", "workers.keda.enabled=true", "--set", "redis.url=rediss://cache.internal/3")
    scaled = one(manifests, "ScaledObject", f"{BASE}-worker")
    for trigger in scaled["spec"]["triggers"]:
        assert trigger["metadata"]["address"] == "cache.internal:6379"
        assert trigger["metadata"]["databaseIndex"] == "3"
        assert trigger["metadata"]["enableTLS"] == "true"


def test_custom_resources_have_the_structure_their_operators_expect(rendered: dict[str, list[Manifest]]) -> None:
    keys = {
        "ScaledObject": {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval", "cooldownPeriod",
                         "advanced", "triggers"},
        "ServiceMonitor": {"selector", "endpoints"},
        "PrometheusRule": {"groups"},
    }  # fmt: skip
    found = set()
    for manifests in rendered.values():
        for manifest in manifests:
            kind = manifest["kind"]
            if (manifest["apiVersion"], kind) not in CUSTOM_KINDS:
                continue
            found.add(kind)
            assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
            assert set(manifest["spec"]) <= keys[kind], f"{kind}: unknown keys"
            if kind == "ServiceMonitor":
                for endpoint in manifest["spec"]["endpoints"]:
                    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            if kind == "ScaledObject":
                for trigger in manifest["spec"]["triggers"]:
                    assert set(trigger) <= {"type", "name", "metadata", "authenticationRef"}
    assert found == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


# ------------------------------------------------------------------------------------------- monitoring


def test_service_monitors_select_the_services_and_their_metrics_ports(rendered: dict[str, list[Manifest]]) -> None:
    for profile in ("gpu", "full"):
        manifests = rendered[profile]
        monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
        assert {m["metadata"]["name"] for m in monitors} == {f"{BASE}-gateway", f"{BASE}-worker"}
        services = [m for m in manifests if m["kind"] == "Service"]
        for monitor in monitors:
            selector = monitor["spec"]["selector"]["matchLabels"]
            (service,) = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
            component = monitor["metadata"]["name"].removeprefix(f"{BASE}-")
            assert service["metadata"]["name"] == f"{BASE}-{component}"
            workload = one(manifests, "Deployment", service["metadata"]["name"])
            assert service["spec"]["selector"].items() <= workload["spec"]["template"]["metadata"]["labels"].items()
            (endpoint,) = monitor["spec"]["endpoints"]
            assert endpoint["path"] == "/metrics"
            (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
            assert port_named(workload, port["targetPort"]) > 0


def test_the_chart_alerts_file_is_deploy_prometheus_alerts_yml() -> None:
    assert ALERTS.is_file(), "deploy/prometheus/alerts.yml is missing"
    linked = CHART / "files" / "alerts.yml"
    assert linked.read_bytes() == ALERTS.read_bytes()
    if linked.is_symlink():
        assert linked.resolve() == ALERTS.resolve()
        assert not Path(os.readlink(linked)).is_absolute()


def test_the_prometheus_rule_holds_the_alert_groups_untouched_and_promtool_accepts_them(
    rendered: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    expected = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    for profile in ("gpu", "full"):
        rule = one(rendered[profile], "PrometheusRule", BASE)
        assert rule["spec"]["groups"] == expected
    annotations = [a for g in expected for r in g["rules"] for a in r.get("annotations", {}).values()]
    templated = [a for a in annotations if "{{" in a]
    assert templated, "the alerts file has no annotation template left to check"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: install Debian's 'prometheus' package (scripts/test does)")
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout


# ------------------------------------------------------------------------------------------ documentation


def undocumented(values: Any, rows: set[str], prefix: str = "") -> Iterator[str]:
    """Paths of values.yaml with no README row: a row documents its value, a mapping without one its keys."""
    if prefix in rows:
        return
    if isinstance(values, dict) and values:
        for key, value in values.items():
            yield from undocumented(value, rows, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix


def exists(values: Any, path: str) -> bool:
    for key in path.split("."):
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_every_value_is_documented_in_the_chart_readme() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip().strip("`") for line in readme.splitlines() if line.startswith("| `")}
    assert len(rows) > 100
    assert list(undocumented(values, rows)) == [], "values missing from the README's table"
    assert [row for row in sorted(rows) if not exists(values, row)] == [], "README rows that are no values"


def test_the_scaled_object_reacts_to_a_backlog_and_to_its_drain(
    rendered: dict[str, list[Manifest]], redis_server: Any
) -> None:
    """What KEDA's redis-streams scaler would do with the rendered triggers, on a real Redis: it reads the group's
    lag (XINFO GROUPS, Redis 7) for a trigger with lagCount and the pending count (XPENDING) for one with
    pendingEntriesCount; the HPA it drives wants ceil(metric / target) replicas for the largest trigger, within
    min and max. KEDA itself needs a cluster; this checks that the chart's triggers read the stream and group the
    workers use and that their targets scale a backlog out and a drained stream back in."""
    import math

    import redis

    scaled = one(rendered["full"], "ScaledObject", f"{BASE}-worker")
    spec = scaled["spec"]
    triggers = {t["name"]: t["metadata"] for t in spec["triggers"]}
    client = redis.Redis.from_url(redis_server.url)

    def wanted() -> int:
        stream, group = triggers["lag"]["stream"], triggers["lag"]["consumerGroup"]
        lag = next(g["lag"] for g in client.xinfo_groups(stream) if g["name"].decode() == group)
        pending = client.xpending(triggers["pending"]["stream"], triggers["pending"]["consumerGroup"])["pending"]
        want = max(math.ceil(lag / int(triggers["lag"]["lagCount"])),
                   math.ceil(pending / int(triggers["pending"]["pendingEntriesCount"])))  # fmt: skip
        return min(spec["maxReplicaCount"], max(spec["minReplicaCount"], want))

    try:
        client.xgroup_create("medic:samples", "judges", id="0", mkstream=True)
        for i in range(1000):
            client.xadd("medic:samples", {"s": f"sample {i}"})
        assert wanted() == 5  # 1,000 unread samples, 200 a worker
        taken = client.xreadgroup("judges", "w1", {"medic:samples": ">"}, count=1000)
        assert wanted() == spec["maxReplicaCount"]  # 1,000 read and not yet judged, 64 a worker: as many as allowed
        client.xack("medic:samples", "judges", *[entry_id for entry_id, _ in taken[0][1]])
        assert wanted() == spec["minReplicaCount"]  # drained: back to the minimum
    finally:
        client.close()
