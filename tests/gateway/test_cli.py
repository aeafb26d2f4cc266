"""The medic-gateway command as an operator runs it: a real process, real HTTP, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes import http
from tests.fakes.upstream import FakeUpstream, Gate, Stream, chat_chunks

EXAMPLE = Path(__file__).parents[2] / "docs" / "examples" / "gateway.yaml"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            command("serve", "--port", str(self.port), *args),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
            cwd=cwd,  # the embedded results store and audit log go to the working directory: never the checkout's
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                if http.request(self.url, "GET", "/readyz").status == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway did not become ready:\n{self.stop()}")
            time.sleep(0.05)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=20)
        return output


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    running: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Served:
        running.append(Served(*args, env=env, cwd=tmp_path))
        return running[-1]

    yield start
    for s in running:
        s.stop()


def test_check_config_accepts_the_example_and_warns_of_unset_secrets() -> None:
    result = subprocess.run(command("check-config", str(EXAMPLE)), capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if not k.endswith("_KEY")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "ok (3 models, 4 upstreams, 2 keys)" in result.stdout
    assert "OPENAI_API_KEY is not set" in result.stderr


def test_check_config_names_the_key_and_line_of_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("    retries: 2\n", "    retries: many\n"))
    result = subprocess.run(command("check-config", str(bad)), capture_output=True, text=True)
    assert result.returncode == 2
    line = EXAMPLE.read_text().splitlines().index("    retries: 2") + 1
    assert f"bad.yaml:{line}: upstreams.vllm-primary.retries: Input should be a valid integer" in result.stderr


def test_open_gateway_refuses_a_public_address() -> None:
    result = subprocess.run(command("serve", "--upstream", "http://127.0.0.1:9/v1", "--host", "0.0.0.0"),
                            capture_output=True, text=True, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert "no gateway keys are configured" in result.stderr and "--allow-unauthenticated" in result.stderr


def test_serve_refuses_to_start_without_its_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = subprocess.run(command("serve", "--config", str(EXAMPLE)), capture_output=True, text=True,
                            env=env, timeout=30)  # fmt: skip
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr


def test_serve_upstream_forwards_every_model_and_says_it_is_open(
    served: Callable[..., Served], fake_upstream: Callable[[], FakeUpstream]
) -> None:
    upstream = fake_upstream()
    gateway = served("--upstream", upstream.url, "--upstream-key-env", "TEST_UPSTREAM_KEY",
                     env={"TEST_UPSTREAM_KEY": "sk-upstream"})  # fmt: skip
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0)
    reply = client.chat.completions.create(model="any-model-name", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    assert upstream.last.json["model"] == "any-model-name"
    assert upstream.last.headers["authorization"] == "Bearer sk-upstream"
    output = gateway.stop()
    assert "no gateway keys configured: any bearer key is accepted; listening on 127.0.0.1 only" in output
    assert "hi" not in output.split("medic-gateway on")[-1].replace("http", "")  # no content in logs


def test_sigterm_lets_a_stream_in_flight_finish(
    served: Callable[..., Served], fake_upstream: Callable[[], FakeUpstream]
) -> None:
    upstream = fake_upstream()
    gate = Gate(threading.Event())
    chunks = chat_chunks(["Take ", "with ", "food."])
    upstream.script("/v1/chat/completions", Stream([chunks[0], chunks[1], gate, *chunks[2:]]))
    gateway = served("--upstream", upstream.url)
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0, timeout=20)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    iterator = iter(stream)
    pieces = [next(iterator).choices[0].delta.content, next(iterator).choices[0].delta.content]
    gateway.process.send_signal(signal.SIGTERM)
    threading.Timer(0.5, gate.event.set).start()
    pieces += [c.choices[0].delta.content for c in iterator if c.choices]
    assert "".join(p or "" for p in pieces) == "Take with food."
    # uvicorn re-raises the signal it caught once the drain is done, so the exit is by SIGTERM, not a crash.
    assert gateway.process.wait(20) in (0, -signal.SIGTERM)


def test_serve_fails_clearly_when_a_provider_needs_the_missing_extra(tmp_path: Path) -> None:
    (tmp_path / "litellm.py").write_text("raise ImportError('not installed')\n")
    config = tmp_path / "gateway.yaml"
    config.write_text("upstreams:\n  claude: {provider: anthropic}\nmodels:\n  c: {routes: [{upstream: claude}]}\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(command("serve", "--config", str(config), "--port", str(free_port())),
                            capture_output=True, text=True, env=env, timeout=30, cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "pip install 'medic-gateway[providers]'" in result.stderr + result.stdout


def test_traces_are_exported_over_otlp_by_the_standard_variables(
    served: Callable[..., Served], fake_upstream: Callable[[], FakeUpstream]
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.fakes.collector import OtlpCollector

    collector = OtlpCollector().start()
    try:
        upstream = fake_upstream()
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
               "OTEL_SERVICE_NAME": "gateway-under-test"}  # fmt: skip
        gateway = served("--upstream", upstream.url, env=env)
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="anything", max_retries=0)
        client.chat.completions.create(model="triage-model", messages=[{"role": "user", "content": "chest pain"}])
        body = collector.wait_for("/v1/traces")
    finally:
        collector.stop()
    export = ExportTraceServiceRequest.FromString(body)
    spans = [s for r in export.resource_spans for ss in r.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["chat triage-model"]
    attributes = {a.key: a.value for a in spans[0].attributes}
    assert attributes["gen_ai.request.model"].string_value == "triage-model"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert b"chest pain" not in body  # content is off by default
    service = {a.key: a.value.string_value for a in export.resource_spans[0].resource.attributes}
    assert service["service.name"] == "gateway-under-test"
