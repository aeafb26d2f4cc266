"""The task a request states, end to end: OpenAI SDK -> gateway -> fake upstream, and the sample on Redis.

The task comes from the ``x-medic-task`` header, else from the model's ``task`` in the configuration; it
reaches the sample the judges read, the header never reaches the upstream, and a value that names no task
is a 400 before anything is forwarded.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
import redis

from config import GatewayConfig, ModelConfig, Route, SamplingConfig, UpstreamConfig
from pipeline.sample import Sample
from tests.fakes import http
from tests.fakes.gateway_server import GatewayServer
from tests.fakes.redis_server import RedisServer
from tests.fakes.upstream import FakeUpstream

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Summarise: Jane Roe, 71, admitted with community-acquired pneumonia."}]
Ask = Callable[..., Sample]


def configured(fake: FakeUpstream) -> GatewayConfig:
    """``summariser`` is configured as a transform; every other model goes through ``*``, with no task."""
    routes = [Route(upstream="u")]
    return GatewayConfig(
        upstreams={"u": UpstreamConfig(url=fake.url)},
        models={"summariser": ModelConfig(routes=routes, task="transform"), "*": ModelConfig(routes=routes)},
        sampling=SamplingConfig(rate=1.0, max_samples_per_s=10_000),
    )


@pytest.fixture
def ask(fake: FakeUpstream, gateway: Callable[..., GatewayServer], redis_server: RedisServer) -> Ask:
    """``ask(model, header)``: one chat completion through a gateway that samples everything into Redis,
    and the Sample it produced, as a judge worker would read it from the stream."""
    gw = gateway(configured(fake), redis_url=redis_server.url)
    client = openai.OpenAI(base_url=gw.base_url, api_key="k", max_retries=0)

    def send(model: str, header: str | None = None) -> Sample:
        headers = {"x-medic-task": header} if header is not None else {}
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES, extra_headers=headers)
        return sampled(redis_server.url, raw.headers["x-request-id"])

    return send


def sampled(url: str, request_id: str) -> Sample:
    client = redis.Redis.from_url(url)

    def find() -> Sample | None:
        entries = client.xrange("medic:samples") if client.exists("medic:samples") else []
        samples = [Sample.model_validate_json(fields[b"s"]) for _, fields in entries]
        return next((s for s in samples if s.request_id == request_id), None)

    try:
        return http.eventually(find)
    finally:
        client.close()


# ----------------------------------------------------------------------------------- into the sample


@pytest.mark.parametrize("value", ["grounded_qa", "transform", "open", "Grounded_QA", "OPEN"])
def test_the_header_task_reaches_the_sample(value: str, ask: Ask) -> None:
    assert ask("gpt-test", value).task == value.lower()


def test_the_models_configured_task_reaches_the_sample(ask: Ask) -> None:
    assert ask("summariser").task == "transform"


def test_the_header_wins_over_the_models_configured_task(ask: Ask) -> None:
    assert ask("summariser", "grounded_qa").task == "grounded_qa"


def test_a_task_stated_nowhere_is_none_in_the_sample(ask: Ask) -> None:
    sample = ask("gpt-test")
    assert sample.task is None
    assert sample.trigger == "rate" and sample.output()  # a real sample: only its task is unstated


# ---------------------------------------------------------------------------------------- the header


@pytest.mark.parametrize("value", ["summarise", "", "open-ended", "transform,open"], ids=repr)
def test_a_header_that_names_no_task_is_400_and_nothing_is_forwarded(
    value: str, fake: FakeUpstream, gw: GatewayServer
) -> None:
    response = http.post_json(gw.url, CHAT, {"model": "gpt-test", "messages": MESSAGES}, {"x-medic-task": value})
    assert response.status == 400, response.body
    assert response.header("content-type") == "application/json"
    assert response.header("x-request-id")
    assert response.json() == {
        "error": {
            "message": "The x-medic-task header must be one of: transform, grounded_qa, open.",
            "type": "invalid_request_error",
            "param": "x-medic-task",
            "code": "invalid_task",
        }
    }
    assert fake.requests == []


def test_the_sdk_raises_bad_request_for_an_unknown_task(
    fake: FakeUpstream, gw: GatewayServer, openai_client: Callable[..., openai.OpenAI]
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gw).chat.completions.create(
            model="gpt-test", messages=MESSAGES, extra_headers={"x-medic-task": "diagnose"}
        )
    assert caught.value.code == "invalid_task"
    assert caught.value.param == "x-medic-task"
    assert fake.requests == []


@pytest.mark.parametrize("stream", [False, True])
def test_the_header_is_not_forwarded_upstream(
    stream: bool, fake: FakeUpstream, gw: GatewayServer, openai_client: Callable[..., openai.OpenAI]
) -> None:
    headers = {"x-medic-task": "transform", "x-custom-trace": "abc"}
    completions = openai_client(gw).chat.completions
    if stream:
        assert list(completions.create(model="gpt-test", messages=MESSAGES, stream=True, extra_headers=headers))
    else:
        completions.create(model="gpt-test", messages=MESSAGES, extra_headers=headers)
    received = fake.last.headers
    assert "x-medic-task" not in received
    assert received["x-custom-trace"] == "abc"  # other client headers still pass
