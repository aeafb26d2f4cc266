"""Non-OpenAI providers go through litellm: an Anthropic upstream, faked on loopback, behind the gateway."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest

from config import GatewayConfig, ModelConfig, Route, UpstreamConfig
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gateway_server import GatewayServer

pytest.importorskip("litellm", reason="the providers extra is installed by scripts/test")


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


def config(url: str, retries: int = 0) -> GatewayConfig:
    upstream = UpstreamConfig(url=url, provider="anthropic", api_key_env="TEST_ANTHROPIC_KEY", retries=retries,
                              backoff_ms=1)  # fmt: skip
    return GatewayConfig(
        upstreams={"claude": upstream},
        models={"claude-sonnet": ModelConfig(routes=[Route(upstream="claude", model="claude-test")])},
    )


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")


def test_chat_is_translated_to_messages_and_back(
    anthropic: FakeAnthropic, gateway: Callable[..., GatewayServer], openai_client: Callable[..., openai.OpenAI]
) -> None:
    server = gateway(config(anthropic.url))
    completion = openai_client(server).chat.completions.create(
        model="claude-sonnet", messages=[{"role": "user", "content": "What is paracetamol?"}], max_tokens=50
    )
    assert completion.choices[0].message.content == "Paracetamol is an analgesic."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 11
    headers, body = anthropic.requests[-1]
    assert body["model"] == "claude-test" and body["max_tokens"] == 50
    assert headers["x-api-key"] == "sk-ant-test"
    assert 'gen_ai_client_token_usage_count{gen_ai_operation_name="chat",gen_ai_provider_name="anthropic"' in (
        server.metrics()
    )


def test_stream_is_translated_and_usage_withheld_unless_asked(
    anthropic: FakeAnthropic, gateway: Callable[..., GatewayServer], openai_client: Callable[..., openai.OpenAI]
) -> None:
    server = gateway(config(anthropic.url))
    client = openai_client(server)
    messages = [{"role": "user", "content": "What is paracetamol?"}]
    chunks = list(client.chat.completions.create(model="claude-sonnet", messages=messages, stream=True))  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Paracetamol is an analgesic."
    assert all(c.usage is None and c.choices for c in chunks)
    assert 'gen_ai_token_type="output"' in server.metrics()
    asked = list(client.chat.completions.create(model="claude-sonnet", messages=messages, stream=True,  # type: ignore[arg-type]
                                                stream_options={"include_usage": True}))  # fmt: skip
    assert asked[-1].choices == [] and asked[-1].usage is not None and asked[-1].usage.completion_tokens == 6


def test_provider_error_is_openai_shaped_and_retried(
    anthropic: FakeAnthropic, gateway: Callable[..., GatewayServer], openai_client: Callable[..., openai.OpenAI]
) -> None:
    anthropic.status = 503
    server = gateway(config(anthropic.url, retries=1))
    with pytest.raises(openai.APIStatusError) as info:
        openai_client(server).chat.completions.create(
            model="claude-sonnet", messages=[{"role": "user", "content": "secret clinical text"}]
        )
    assert info.value.status_code >= 500  # litellm maps provider overload onto its own 5xx classes
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "provider_error"
    assert "secret clinical text" not in str(error)
    assert len(anthropic.requests) == 2  # one retry


def test_litellm_is_not_imported_for_openai_compatible_upstreams(tmp_path: Path) -> None:
    import subprocess

    code = (
        "import sys; from gateway.app import Gateway; from config import single_upstream;"
        "Gateway(single_upstream('http://127.0.0.1:9/v1'));"
        "assert 'litellm' not in sys.modules, 'litellm imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # its results store goes there
