"""The gateway's /metrics after real traffic: valid for promtool, GenAI names and bounded labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable

import openai
import pytest

from config import GatewayConfig, ModelConfig, Route, TelemetryConfig, UpstreamConfig
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import (
    USAGE,
    FakeUpstream,
    Gate,
    Json,
    Recorded,
    Spec,
    Stream,
    chat_chunks,
    chat_completion,
    closed_port,
    error,
)

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]

CHAT = "/v1/chat/completions"
PROMPT = "Patient Jane Roe, MRN 00417, reports chest pain."
MESSAGES = [{"role": "user", "content": PROMPT}]
REQUEST_ID = "trace-me-7f3a9c"


def _traffic(fake: FakeUpstream, gw: GatewayServer, client: openai.OpenAI) -> str:
    """A bit of everything; returns the scrape once every request has been counted."""

    def answer(request: Recorded) -> Spec:
        if request.json["model"] == "bad":
            return error(400)
        return Stream(chat_chunks(["a", "b"])) if request.json.get("stream") else Json(chat_completion())

    fake.script(CHAT, answer)
    client.chat.completions.create(model="plain", messages=MESSAGES, extra_headers={"X-Request-ID": REQUEST_ID})
    list(client.chat.completions.create(model="streamed", messages=MESSAGES, stream=True))
    list(
        client.chat.completions.create(
            model="streamed", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    client.embeddings.create(model="embed", input="x", encoding_format="float")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="bad", messages=MESSAGES)
    assert http.request(gw.url, "POST", CHAT, b"{nope").status == 400
    assert http.request(gw.url, "GET", "/v1/nowhere").status == 404

    return gw.metrics_when(lambda text: http.metric(text, "medic_gateway_requests_total") == 6)


def test_promtool_accepts_the_scrape(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    text = _traffic(fake, gw, openai_client(gw))
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: install Debian's 'prometheus' package (scripts/test does)")
    result = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    problems = (result.stdout + result.stderr).decode()
    assert result.returncode == 0, f"promtool check metrics failed:\n{problems}"
    assert problems.strip() == ""


def test_metrics_content_type(gw: GatewayServer) -> None:
    response = http.request(gw.url, "GET", "/metrics")
    assert response.status == 200
    assert response.header("content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE medic_gateway_requests_total counter" in response.body


def test_genai_metrics_after_traffic(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    text = _traffic(fake, gw, openai_client(gw))
    chat = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai"}

    duration = "gen_ai_client_operation_duration_seconds"
    assert http.metric(text, f"{duration}_count", **chat, gen_ai_request_model="plain", error_type="") == 1
    assert http.metric(text, f"{duration}_count", **chat, gen_ai_request_model="streamed", error_type="") == 2
    assert http.metric(text, f"{duration}_count", **chat, gen_ai_request_model="bad", error_type="400") == 1
    assert http.metric(text, f"{duration}_count", gen_ai_operation_name="embeddings", gen_ai_request_model="embed") == 1
    assert http.metric(text, f"{duration}_bucket", **chat, gen_ai_request_model="plain", le="+Inf") == 1

    tokens = "gen_ai_client_token_usage"
    for model, requests in (("plain", 1), ("streamed", 2)):
        labels = {**chat, "gen_ai_request_model": model}
        assert (
            http.metric(text, f"{tokens}_sum", **labels, gen_ai_token_type="input") == USAGE["prompt_tokens"] * requests
        )
        assert http.metric(text, f"{tokens}_sum", **labels, gen_ai_token_type="output") == (
            USAGE["completion_tokens"] * requests
        )
    assert http.label_values(text, f"{tokens}_count", "gen_ai_token_type") == {"input", "output"}

    ttft = "gen_ai_server_time_to_first_token_seconds"
    assert http.metric(text, f"{ttft}_count", gen_ai_request_model="streamed") == 2
    assert http.metric(text, f"{ttft}_count", gen_ai_request_model="plain") == 0  # streams only

    requests = "medic_gateway_requests_total"
    assert http.metric(text, requests, endpoint=CHAT, model="plain", status_code="200", upstream="default") == 1
    assert http.metric(text, requests, endpoint=CHAT, model="streamed", status_code="200") == 2
    assert http.metric(text, requests, endpoint=CHAT, model="bad", status_code="400") == 1
    assert http.metric(text, requests, endpoint=CHAT, status_code="400") == 2  # and the malformed body
    assert http.metric(text, requests, endpoint="/v1/embeddings", status_code="200") == 1

    overhead = "medic_gateway_overhead_seconds"
    assert http.metric(text, f"{overhead}_count", endpoint=CHAT) == 5
    assert 0 < http.metric(text, f"{overhead}_sum", endpoint=CHAT) < 5
    assert http.metric(text, "gen_ai_server_request_duration_seconds_count", gen_ai_request_model="streamed") == 2
    assert http.metric(text, "medic_gateway_upstream_latency_seconds_count", upstream="default") == 5


def test_no_request_content_or_ids_in_labels(fake: FakeUpstream, gw: GatewayServer, openai_client: Client) -> None:
    text = _traffic(fake, gw, openai_client(gw))
    # the labels and the help texts, not the values: a value may hold the digits 00417 by chance (0.004174...)
    words = "\n".join(re.findall(r"\{[^}]*\}", text) + [line for line in text.splitlines() if line.startswith("#")])
    assert "{" in words and REQUEST_ID not in words
    assert "Jane" not in words and "00417" not in words
    assert "sk-client" not in words


def test_model_labels_are_capped_in_pass_through_mode(fake: FakeUpstream, gateway: Gateway) -> None:
    config = GatewayConfig(
        upstreams={"u": UpstreamConfig(url=fake.url)},
        models={"*": ModelConfig(routes=[Route(upstream="u")])},
        telemetry=TelemetryConfig(max_model_labels=2),
    )
    gw = gateway(config)
    for model in ("m1", "m2", "m3", "m4", "m1"):
        body = json.dumps({"model": model, "messages": MESSAGES}).encode()
        assert http.request(gw.url, "POST", CHAT, body).status == 200

    text = gw.metrics_when(lambda t: http.metric(t, "medic_gateway_requests_total") == 5)
    assert http.label_values(text, "medic_gateway_requests_total", "model") == {"m1", "m2", "other"}
    assert http.metric(text, "medic_gateway_requests_total", model="other") == 2
    assert http.metric(text, "medic_gateway_requests_total", model="m1") == 2


def test_configured_models_always_keep_their_label(fake: FakeUpstream, gateway: Gateway) -> None:
    config = GatewayConfig(
        upstreams={"u": UpstreamConfig(url=fake.url)},
        models={"clinical": ModelConfig(routes=[Route(upstream="u")]), "*": ModelConfig(routes=[Route(upstream="u")])},
        telemetry=TelemetryConfig(max_model_labels=1),
    )
    gw = gateway(config)
    for model in ("x1", "x2", "clinical"):
        http.request(gw.url, "POST", CHAT, json.dumps({"model": model, "messages": MESSAGES}).encode())
    text = gw.metrics_when(lambda t: http.metric(t, "medic_gateway_requests_total") == 3)
    assert http.label_values(text, "medic_gateway_requests_total", "model") == {"x1", "other", "clinical"}


def test_in_flight_gauge(fake: FakeUpstream, gw: GatewayServer) -> None:
    release = threading.Event()
    fake.script(CHAT, Stream([Gate(release), *chat_chunks(["x"])]))
    body = json.dumps({"model": "m", "messages": MESSAGES, "stream": True}).encode()
    worker = threading.Thread(target=http.request, args=(gw.url, "POST", CHAT, body))
    worker.start()
    try:
        gauge = "medic_gateway_requests_in_flight"
        gw.metrics_when(lambda text: http.metric(text, gauge, endpoint=CHAT) == 1)
    finally:
        release.set()
        worker.join(10)
    gw.metrics_when(lambda text: http.metric(text, gauge, endpoint=CHAT) == 0)


@pytest.mark.parametrize("failure", ["timeout", "unreachable"])
def test_overhead_excludes_the_upstream_wait_when_the_upstream_fails(
    failure: str, fake: FakeUpstream, gateway: Gateway
) -> None:
    if failure == "timeout":
        fake.script(CHAT, Json(chat_completion(), delay_s=5))
        upstream = UpstreamConfig(url=fake.url, timeout_s=0.6, retries=0)
    else:  # a retry after 300 to 600 ms of backoff, spent waiting on the upstream
        upstream = UpstreamConfig(url=f"http://127.0.0.1:{closed_port()}/v1", retries=1, backoff_ms=600)
    gw = gateway(GatewayConfig(upstreams={"u": upstream}, models={"*": ModelConfig(routes=[Route(upstream="u")])}))
    response = http.request(gw.url, "POST", CHAT, json.dumps({"model": "m", "messages": MESSAGES}).encode())
    assert response.status == (504 if failure == "timeout" else 502)
    overhead = "medic_gateway_overhead_seconds"
    text = gw.metrics_when(lambda t: http.metric(t, f"{overhead}_count") == 1)
    assert http.metric(text, f"{overhead}_sum") < 0.25, "time spent waiting on the upstream counted as overhead"
    duration = "gen_ai_client_operation_duration_seconds_sum"
    assert http.metric(text, duration, error_type=f"upstream_{failure}") >= 0.3
