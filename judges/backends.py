"""Where a judge LLM runs: any OpenAI-compatible endpoint (a vLLM server in production), or a vLLM engine in
this process (extra ``medic-gateway[vllm]``, imported only when configured).

Both answer one chat call constrained to a JSON schema, at temperature 0, and count their calls and tokens.
A global semaphore per backend bounds the calls in flight, whatever the number of samples being judged.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import orjson

from config import JudgeLLMConfig

Messages = list[dict[str, str]]
RETRIED_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
BACKOFF_BASE_S = 0.25
MAX_RETRY_AFTER_S = 30.0


class JudgeUnavailable(RuntimeError):
    """The judge endpoint failed after its retries, or answered something that is not a chat completion."""


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class JudgeBackend(Protocol):
    model: str
    usage: Usage

    async def complete(self, messages: Messages, schema_name: str, schema: dict[str, Any]) -> str:
        """The reply's text (the JSON the schema asks for); raises JudgeUnavailable after the retries."""
        ...

    async def close(self) -> None: ...


class GuardBackend(Protocol):
    model: str
    usage: Usage

    async def first_token_probability(self, prompt: str, positive: str, negative: str) -> float | None:
        """P(positive) / (P(positive) + P(negative)) for the first generated token of ``prompt``; None when
        neither is among the top tokens."""
        ...

    async def close(self) -> None: ...


def open_backend(config: JudgeLLMConfig) -> JudgeBackend:
    if config.backend == "vllm":
        return VllmBackend(config)
    return HttpBackend(config)


class HttpBackend:
    """Chat completions with ``response_format`` json_schema (strict) over one aiohttp connection pool.

    Not the ``openai`` SDK: it cost about 11 ms of CPU per call here against 0.3 ms for this client
    (docs/performance.md), and a sample makes 22 calls. Connection errors, timeouts, 408, 429 and 5xx are
    retried ``max_retries`` times with exponential backoff and full jitter; a Retry-After in seconds wins.
    """

    def __init__(self, config: JudgeLLMConfig) -> None:
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        self.url = (config.base_url or "").rstrip("/") + "/chat/completions"
        self.completions_url = (config.base_url or "").rstrip("/") + "/completions"
        self.headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.max_retries = config.max_retries
        self.timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self.usage = Usage()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None

    async def complete(self, messages: Messages, schema_name: str, schema: dict[str, Any]) -> str:
        body = orjson.dumps({
            "model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": schema_name, "schema": schema, "strict": True}},
        })  # fmt: skip
        async with self._slots:
            reply = await self._post(self.url, body)
        self.usage.calls += 1
        usage = reply.get("usage") or {}
        self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
        try:
            return str(reply["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailable("the judge endpoint's reply is not a chat completion") from None

    async def first_token_probability(self, prompt: str, positive: str, negative: str) -> float | None:
        """A raw completions call for one token with the top log-probabilities (a guard model's verdict)."""
        body = orjson.dumps({"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                             "logprobs": 5})  # fmt: skip
        async with self._slots:
            reply = await self._post(self.completions_url, body)
        self.usage.calls += 1
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailable("the guard endpoint's reply has no top log-probabilities") from None
        return _share(top, positive, negative)

    async def _post(self, url: str, body: bytes) -> dict[str, Any]:
        for attempt in range(self.max_retries + 1):
            delay = BACKOFF_BASE_S * 2**attempt * random.uniform(0.5, 1.0)
            try:
                async with self._pool().post(url, data=body, headers=self.headers) as response:
                    if response.status == 200:
                        reply = orjson.loads(await response.read())
                        if isinstance(reply, dict):
                            return reply
                        raise JudgeUnavailable("the judge endpoint's reply is not a JSON object")
                    if response.status not in RETRIED_STATUSES or attempt == self.max_retries:
                        raise JudgeUnavailable(f"the judge endpoint answered {response.status}")
                    delay = _retry_after(response.headers.get("retry-after")) or delay
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                if attempt == self.max_retries:
                    raise JudgeUnavailable(f"the judge endpoint failed: {type(exc).__name__}") from None
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _pool(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0)  # the semaphore bounds the calls
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                  cookie_jar=aiohttp.DummyCookieJar())  # fmt: skip
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _share(top: Any, positive: str, negative: str) -> float | None:
    """P(positive) among {positive, negative} from a token -> log-probability map (tokens stripped, any case;
    the longer word wins a shared prefix: "unsafe" is not "safe")."""
    if not isinstance(top, dict):
        return None
    totals = {positive: 0.0, negative: 0.0}
    for token, logprob in top.items():
        word = str(token).strip().lower()
        for target in sorted(totals, key=len, reverse=True):
            if word and target.startswith(word) and (len(word) >= 2 or word == target):
                totals[target] += math.exp(float(logprob))
                break
    total = totals[positive] + totals[negative]
    return totals[positive] / total if total > 0 else None


def _retry_after(value: str | None) -> float | None:
    return min(float(value), MAX_RETRY_AFTER_S) if value is not None and value.strip().isdigit() else None


class VllmBackend:
    """A vLLM engine in this process (``pip install medic-gateway[vllm]``, a GPU): the same calls without HTTP.
    Prompts go through the model's chat template; the schema through vLLM's structured outputs; automatic
    prefix caching reuses each document across the questions asked about it."""

    def __init__(self, config: JudgeLLMConfig) -> None:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise RuntimeError("backend vllm needs the extra: pip install 'medic-gateway[vllm]'") from exc
        args = {"enable_prefix_caching": True, **config.engine_args}
        self.engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=config.model, **args))
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.usage = Usage()
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tokenizer: Any = None

    async def complete(self, messages: Messages, schema_name: str, schema: dict[str, Any]) -> str:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        tokenizer = await self._chat_tokenizer()
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        params = SamplingParams(temperature=0, max_tokens=self.max_tokens,
                                structured_outputs=StructuredOutputsParams(json=schema))  # fmt: skip
        final: Any = None
        async with self._slots:
            async for output in self.engine.generate(prompt, params, request_id=f"{schema_name}-{uuid.uuid4().hex}"):
                final = output
        if final is None or not final.outputs:
            return ""
        self.usage.calls += 1
        self.usage.prompt_tokens += len(final.prompt_token_ids or ())
        self.usage.completion_tokens += len(final.outputs[0].token_ids)
        return str(final.outputs[0].text)

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

    async def _chat_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return self._tokenizer
