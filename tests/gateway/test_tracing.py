"""OpenTelemetry spans per the GenAI semantic conventions, end to end, exported to memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from config import GatewayConfig, ModelConfig, Route, UpstreamConfig, single_upstream
from gateway.tracing import CAPTURE_ENV, configure
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.upstream import FakeUpstream, Json, Stream, chat_chunks, chat_completion, error

Gateway = Callable[..., GatewayServer]
Fake = Callable[[], FakeUpstream]
Client = Callable[..., openai.OpenAI]

CHAT = "/v1/chat/completions"
PROMPT = "Patient Jane Roe, MRN 00417: is 40 mg of furosemide safe?"
MESSAGES = [{"role": "user", "content": PROMPT}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(fake: FakeUpstream, gateway: Gateway, exporter: InMemorySpanExporter) -> Callable[..., GatewayServer]:
    """``traced(capture_content=False, config=None)``: a gateway whose spans land in ``exporter``."""

    def start(capture_content: bool = False, config: GatewayConfig | None = None) -> GatewayServer:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracing = configure(capture_content=capture_content, provider=provider)
        return gateway(config or single_upstream(fake.url), tracing=tracing)

    return start


def one_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = http.eventually(exporter.get_finished_spans)
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def all_text(span: ReadableSpan) -> str:
    """Every attribute and event of a span, as one string."""
    parts: list[Any] = [dict(span.attributes or {})]
    parts += [(e.name, dict(e.attributes or {})) for e in span.events]
    return json.dumps(parts, default=str)


def test_chat_span_has_the_genai_attributes(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, Json(chat_completion(model="gpt-test-2024-08-06")))
    gw = traced()
    openai_client(gw).chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        temperature=0.3,
        max_tokens=64,
        seed=5,
    )
    span = one_span(exporter)
    assert span.name == "chat gpt-test"
    assert span.kind == SpanKind.CLIENT
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-test"
    assert attributes["gen_ai.response.model"] == "gpt-test-2024-08-06"
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attributes["gen_ai.request.temperature"] == 0.3
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert attributes["gen_ai.request.seed"] == 5
    assert span.status.status_code == StatusCode.UNSET


def test_streamed_chat_span_learns_from_the_stream(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, Stream(chat_chunks(["a", "b"], model="gpt-test-0613", finish_reason="length")))
    gw = traced()
    list(openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))
    attributes = dict(one_span(exporter).attributes or {})
    assert attributes["gen_ai.response.model"] == "gpt-test-0613"
    assert attributes["gen_ai.usage.input_tokens"] == 11  # from the usage chunk the client never saw
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert tuple(attributes["gen_ai.response.finish_reasons"]) == ("length",)


def test_provider_name_follows_the_upstream(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    route = Route(upstream="v", model="Qwen/Qwen3-8B")
    config = GatewayConfig(
        upstreams={"v": UpstreamConfig(url=fake.url, provider="vllm")},
        models={"clinical": ModelConfig(routes=[route])},
    )
    gw = traced(config=config)
    openai_client(gw).embeddings.create(model="clinical", input="x", encoding_format="float")
    span = one_span(exporter)
    assert span.name == "embeddings clinical"
    assert dict(span.attributes or {})["gen_ai.provider.name"] == "vllm"


def test_no_message_content_by_default(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, Json(chat_completion("Yes, with monitoring of potassium.")))
    gw = traced()
    openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    span = one_span(exporter)
    recorded = all_text(span)
    assert "furosemide" not in recorded and "Jane" not in recorded and "potassium" not in recorded
    assert not [k for k in span.attributes or {} if k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.prompt"))]


def test_message_content_only_with_capture_on(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, Json(chat_completion("Yes, 40 mg is a usual starting dose.")))
    gw = traced(capture_content=True)
    openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    attributes = dict(one_span(exporter).attributes or {})
    assert json.loads(str(attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
    ]
    assert json.loads(str(attributes["gen_ai.output.messages"])) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Yes, 40 mg is a usual starting dose."}],
         "finish_reason": "stop"}
    ]  # fmt: skip


def test_streamed_output_is_captured_whole(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, Stream(chat_chunks(["Yes, 40 mg ", "is usual."])))
    gw = traced(capture_content=True)
    list(openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    output = json.loads(str(dict(one_span(exporter).attributes or {})["gen_ai.output.messages"]))
    assert output[0]["parts"] == [{"type": "text", "content": "Yes, 40 mg is usual."}]


def test_capture_can_be_turned_on_by_the_standard_variable(
    fake: FakeUpstream,
    gateway: Gateway,
    exporter: InMemorySpanExporter,
    openai_client: Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(CAPTURE_ENV, "true")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gw = gateway(single_upstream(fake.url), tracing=configure(provider=provider))
    openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert PROMPT in str(dict(one_span(exporter).attributes or {})["gen_ai.input.messages"])


def test_incoming_traceparent_makes_the_span_its_child_and_reaches_the_upstream(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    gw = traced()
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    openai_client(gw).chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        extra_headers={"traceparent": traceparent},
    )
    span = one_span(exporter)
    assert span.context is not None and span.parent is not None
    assert span.context.trace_id == int(TRACE_ID, 16)
    assert span.parent.span_id == int(PARENT_ID, 16)
    assert span.parent.is_remote
    sent = fake.last.headers.getall("traceparent")
    assert sent == [f"00-{TRACE_ID}-{span.context.span_id:016x}-01"]


def test_without_traceparent_the_span_is_a_root_and_the_upstream_joins_it(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    gw = traced()
    openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    span = one_span(exporter)
    assert span.parent is None and span.context is not None
    (sent,) = fake.last.headers.getall("traceparent")
    version, trace_id, span_id, flags = sent.split("-")
    assert (version, trace_id, span_id) == ("00", f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert int(flags, 16) & 1, "sampled"


def test_upstream_error_marks_the_span(
    fake: FakeUpstream, traced: Callable[..., GatewayServer], exporter: InMemorySpanExporter, openai_client: Client
) -> None:
    fake.script(CHAT, error(400, "no"))
    gw = traced()
    with pytest.raises(openai.BadRequestError):
        openai_client(gw).chat.completions.create(model="gpt-test", messages=MESSAGES)
    span = one_span(exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "400"


def test_without_tracing_the_client_traceparent_passes_through(
    fake: FakeUpstream, gateway: Gateway, openai_client: Client
) -> None:
    gw = gateway(single_upstream(fake.url))
    assert not gw.app.tracing.enabled
    traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
    openai_client(gw).chat.completions.create(
        model="gpt-test",
        messages=MESSAGES,
        extra_headers={"traceparent": traceparent},
    )
    assert fake.last.headers.getall("traceparent") == [traceparent]
