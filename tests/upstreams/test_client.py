"""The one outbound client and its one retry policy, as the gateway's own model calls and a judge model see them:
real HTTP on loopback against the scriptable fake upstream."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from config import JudgeLLMConfig, UpstreamConfig
from judges.backends import HttpBackend, JudgeUnavailable
from tests.fakes.upstream import FakeUpstream, Hang, Json, chat_completion, error
from upstreams.client import ModelClient
from upstreams.retry import RETRY_STATUSES, backoff_s, retry_after_s, transient, unsupported

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_backoff_doubles_within_jitter_and_a_retry_after_is_capped() -> None:
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (6, 2.0)):
        waits = [backoff_s(attempt, 100, 2000) for _ in range(200)]
        assert min(waits) >= ceiling / 2 and max(waits) <= ceiling
    assert backoff_s(1, 100, 2000, retry_after_s=1.0) == 1.0
    assert backoff_s(1, 100, 2000, retry_after_s=60.0) == 2.0


def test_retry_after_in_seconds_only() -> None:
    assert retry_after_s([(b"retry-after", b" 3 ")]) == 3.0
    assert retry_after_s([(b"retry-after", b"Wed, 21 Oct 2026 07:28:00 GMT")]) is None
    assert retry_after_s([(b"x-other", b"3")]) is None


def endpoint(fake: FakeUpstream, retries: int = 2) -> UpstreamConfig:
    return UpstreamConfig(url=fake.url, retries=retries, backoff_ms=1, backoff_max_ms=5, timeout_s=2.0)


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
async def test_every_retried_status_is_tried_again_then_answered(
    fake_upstream: Callable[[], FakeUpstream], status: int
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", error(status, "busy"), Json(chat_completion("Fine.")))
    client = ModelClient.endpoint("judge", endpoint(fake), "judge")
    try:
        completion = await client.chat("m", [{"role": "user", "content": "Hi"}])
    finally:
        await client.close()
    assert (completion.text, completion.status) == ("Fine.", 200)
    assert len(fake.requests) == 2


async def test_a_status_outside_the_policy_is_answered_at_once(fake_upstream: Callable[[], FakeUpstream]) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", error(400, "bad"), Json(chat_completion("Never.")))
    client = ModelClient.endpoint("judge", endpoint(fake), "judge")
    try:
        completion = await client.chat("m", [{"role": "user", "content": "Hi"}])
    finally:
        await client.close()
    assert (completion.text, completion.status) == (None, 400)
    assert len(fake.requests) == 1


async def test_the_gateways_own_calls_are_json_and_tagged(fake_upstream: Callable[[], FakeUpstream]) -> None:
    """FastAPI-based servers (vLLM, llama-cpp-python) refuse a body without a JSON content type."""
    fake = fake_upstream()
    client = ModelClient.endpoint("judge", endpoint(fake), "audit")
    try:
        await client.chat("m", [{"role": "user", "content": "Hi"}])
    finally:
        await client.close()
    (request,) = fake.requests
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-medic-probe"] == "audit"
    assert request.json["model"] == "m" and request.json["stream"] is False


def judge_backend(fake: FakeUpstream, max_retries: int, timeout_s: float = 5.0) -> HttpBackend:
    return HttpBackend(JudgeLLMConfig(model="judge-7b", base_url=fake.url, max_retries=max_retries,
                                      timeout_s=timeout_s))  # fmt: skip


async def test_a_judge_model_call_follows_the_same_policy(fake_upstream: Callable[[], FakeUpstream]) -> None:
    fake = fake_upstream()
    answer = chat_completion('{"answer": "yes"}')
    fake.script("/v1/chat/completions", error(409, "conflict", headers={"retry-after": "0"}), Json(answer))
    backend = judge_backend(fake, max_retries=1)
    try:
        text = await backend.complete([{"role": "user", "content": "?"}], "answer", SCHEMA)
    finally:
        await backend.close()
    assert text == '{"answer": "yes"}'
    posts = [r for r in fake.requests if r.method == "POST"]  # the backend also asks GET /v1/models, once
    assert len(posts) == 2 and backend.usage.calls == 1
    assert all(r.headers["content-type"] == "application/json" for r in posts)
    body = posts[0].json
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA and body["temperature"] == 0


async def test_a_judge_timeout_is_not_retried_and_fails_the_call(fake_upstream: Callable[[], FakeUpstream]) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Hang())
    backend = judge_backend(fake, max_retries=3, timeout_s=0.3)
    try:
        with pytest.raises(JudgeUnavailable, match="timed out"):
            await backend.complete([{"role": "user", "content": "?"}], "answer", SCHEMA)
    finally:
        await backend.close()
    assert [r.method for r in fake.requests] == ["GET", "POST"]


async def test_a_judge_answer_that_is_not_a_json_object_fails(fake_upstream: Callable[[], FakeUpstream]) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", Json(b"[1, 2]"))
    backend = judge_backend(fake, max_retries=0)
    try:
        with pytest.raises(JudgeUnavailable, match="not a JSON object"):
            await backend.complete([{"role": "user", "content": "?"}], "answer", SCHEMA)
    finally:
        await backend.close()


async def test_an_answer_naming_an_unsupported_field_is_not_tried_again(
    fake_upstream: Callable[[], FakeUpstream],
) -> None:
    fake = fake_upstream()
    fake.script("/v1/chat/completions", error(500, "response_format json_schema is not supported"),
                Json(chat_completion("Never.")))  # fmt: skip
    client = ModelClient.endpoint("judge", endpoint(fake), "judge")
    try:
        completion = await client.chat("m", [{"role": "user", "content": "Hi"}])
    finally:
        await client.close()
    assert (completion.text, completion.status, len(fake.requests)) == (None, 500, 1)


def test_what_a_server_says_it_lacks_is_read_without_the_request_it_echoes() -> None:
    fastapi = orjson.dumps(
        {"detail": [{"msg": "Extra inputs are not permitted", "input": "Jane Roe, 64, on warfarin"}]}
    )
    assert unsupported(fastapi) == "Extra inputs are not permitted"
    echoed = orjson.dumps({"error": {"message": "Input should be 'text' or 'json_object', 'input': 'Jane Roe'"}})
    assert unsupported(echoed) == "Input should be 'text' or 'json_object'"
    assert unsupported(orjson.dumps({"error": {"message": "judge overloaded"}})) is None
    assert unsupported(b"<html>502 Bad Gateway</html>") is None
    assert transient(503, b"{}") and not transient(500, echoed) and not transient(400, b"{}")
