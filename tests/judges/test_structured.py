"""Structured output against servers that speak different dialects: the judge client finds the one the endpoint
takes, never retries a request the endpoint cannot serve, says once what it lacks, and checks what comes back."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from config import JudgeLLMConfig
from judges.backends import HttpBackend, JudgeOutputError, JudgeUnavailable
from judges.safety.harm import HarmRater
from judges.structured import mismatch, request_fields
from tests.fakes.judge import FakeJudge

SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["SAME", "DIFFERENT", "UNCLEAR"]}},
          "required": ["verdict"], "additionalProperties": False}  # fmt: skip
ASK = [{"role": "user", "content": "ANSWER 1:\nYes, start it.\n\nANSWER 2:\nYes, it should start."}]


@pytest.fixture
async def backend() -> AsyncIterator[Callable[..., tuple[HttpBackend, FakeJudge]]]:
    made: list[tuple[HttpBackend, FakeJudge]] = []

    def make(server: str = "vllm", **config: Any) -> tuple[HttpBackend, FakeJudge]:
        fake = FakeJudge(server=server).start()
        made.append((HttpBackend(JudgeLLMConfig(model="judge", base_url=fake.base_url, **config)), fake))
        return made[-1]

    yield make
    for client, fake in made:
        await client.close()
        fake.stop()


async def test_llama_cpp_python_is_asked_with_json_object_after_one_refusal(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = backend("llama-cpp-python")
    with caplog.at_level(logging.WARNING, logger="judges.backends"):
        first = await client.complete(ASK, "same_answer", SCHEMA)
        second = await client.complete(ASK, "same_answer", SCHEMA)
    assert first == second == '{"verdict":"SAME"}'
    # json_schema once (a 500 naming the field: never retried), then json_object with the schema, kept
    assert fake.schemas() == ["same_answer", "same_answer"] and client.usage.calls == 3
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "does not take structured output as json_schema" in warnings[0]
    assert "asking as json_object" in warnings[0] and "Input should be 'text' or 'json_object'" in warnings[0]


async def test_tgi_is_asked_with_json_object_and_value_after_two_refusals_in_plain_text(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = backend("tgi")
    with caplog.at_level(logging.WARNING, logger="judges.backends"):
        first = await client.complete(ASK, "same_answer", SCHEMA)
        second = await client.complete(ASK, "same_answer", SCHEMA)
    assert first == second == '{"verdict":"SAME"}'
    # json_schema (422: unknown variant), json_object with schema (422: missing field `value`), then json_value
    assert fake.schemas() == ["same_answer", "same_answer"] and client.usage.calls == 4
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and all("does not take structured output" in w for w in warnings)
    assert "unknown variant `json_schema`" in warnings[0] and "missing field `value`" in warnings[1]


async def test_tgi_given_guided_json_writes_free_text_and_the_check_catches_it(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]],
) -> None:
    client, _ = backend("tgi", structured_output="guided_json")
    with pytest.raises(JudgeOutputError, match="not JSON"):
        await client.complete(ASK, "same_answer", SCHEMA)


async def test_a_dialect_the_endpoint_lacks_fails_once_and_clearly(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]], caplog: pytest.LogCaptureFixture
) -> None:
    client, fake = backend("llama-cpp-python", structured_output="json_schema", max_retries=3)
    with caplog.at_level(logging.ERROR, logger="judges.backends"), pytest.raises(JudgeUnavailable) as raised:
        await client.complete(ASK, "same_answer", SCHEMA)
    assert "accepts no structured output" in str(raised.value) and "judging.llm.structured_output" in str(raised.value)
    assert client.usage.calls == 1 and fake.calls == []  # one request, no retries of a fault that is not transient
    assert [r.exc_info for r in caplog.records] == [None]  # said once, without a traceback


async def test_a_server_that_ignores_the_schema_is_caught(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]],
) -> None:
    client, fake = backend("vllm")
    fake.garbage_next(1, '{"verdict": "PROBABLY"}')
    with pytest.raises(JudgeOutputError, match=r"verdict: enum"):
        await client.complete(ASK, "same_answer", SCHEMA)
    fake.garbage_next(1, "They look the same to me.")
    with pytest.raises(JudgeOutputError, match="not JSON"):
        await client.complete(ASK, "same_answer", SCHEMA)


@pytest.mark.parametrize("dialect", ["json_schema", "json_object", "guided_json"])  # not json_value: TGI's
async def test_vllm_takes_every_dialect(backend: Callable[..., tuple[HttpBackend, FakeJudge]], dialect: str) -> None:
    client, fake = backend("vllm", structured_output=dialect)
    assert await client.complete(ASK, "same_answer", SCHEMA) == '{"verdict":"SAME"}'
    assert fake.schemas() == ["same_answer"]


def test_the_dialects_carry_the_schema_where_each_server_reads_it() -> None:
    assert request_fields("json_schema", "n", SCHEMA)["response_format"]["json_schema"] == {
        "name": "n", "schema": SCHEMA, "strict": True}  # fmt: skip
    assert request_fields("json_object", "n", SCHEMA) == {"response_format": {"type": "json_object", "schema": SCHEMA}}
    assert request_fields("json_value", "n", SCHEMA) == {"response_format": {"type": "json_object", "value": SCHEMA}}
    assert request_fields("guided_json", "n", SCHEMA) == {"guided_json": SCHEMA}


def test_the_check_names_where_the_reply_departs_from_the_schema_without_quoting_it() -> None:
    assert mismatch('{"verdict": "SAME"}', SCHEMA) is None
    assert mismatch('{"verdict": "SAME", "why": "the patient, Jane Roe"}', SCHEMA) == (
        "(top level): additionalProperties False"
    )
    assert mismatch("[]", SCHEMA) == "(top level): type 'object'"


async def test_results_name_the_model_version_the_server_reports(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]],
) -> None:
    client, fake = backend("vllm", version="2026-11")
    assert client.served == "judge@2026-11"  # configured: until the server says otherwise
    fake.fingerprint = "fp_a1"
    await client.complete(ASK, "same_answer", SCHEMA)
    assert client.served == "judge@fp_a1"
    fake.fingerprint = "fp_b2"  # new weights or a new configuration behind the same name: a new series
    await client.complete(ASK, "same_answer", SCHEMA)
    assert client.served == "judge@fp_b2"


async def test_a_server_without_fingerprints_is_asked_what_it_serves(
    backend: Callable[..., tuple[HttpBackend, FakeJudge]],
) -> None:
    client, fake = backend("llama-cpp-python")
    fake.served_as = "judge@b179c9523d0e"  # the local engine's alias: the GGUF file's sha256 prefix
    await client.complete(ASK, "same_answer", SCHEMA)
    assert client.served == "judge@b179c9523d0e"
    harm = HarmRater(client)
    assert harm.method.startswith("harm-llm/judge@b179c9523d0e/")


async def test_an_unknown_version_leaves_the_name_alone(backend: Callable[..., tuple[HttpBackend, FakeJudge]]) -> None:
    client, _ = backend("vllm")  # no fingerprint, no /v1/models, nothing configured
    await client.complete(ASK, "same_answer", SCHEMA)
    assert client.served == "judge"
