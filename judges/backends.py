"""Where a judge LLM runs: any OpenAI-compatible endpoint (a vLLM server in production), or a vLLM engine in
this process (extra ``medic-gateway[vllm]``, imported only when configured).

Both answer one chat call constrained to a JSON schema, at temperature 0, and count their calls and tokens.
A global semaphore per backend bounds the calls in flight, whatever the number of samples being judged.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from config import JudgeLLMConfig, UpstreamConfig
from judges.structured import DIALECTS, Dialect, mismatch, request_fields
from protocol.errors import GatewayError
from upstreams.client import ModelClient
from upstreams.retry import unsupported

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]
BACKOFF_BASE_MS = 250  # the first backoff of a judge call; it doubles per retry
MAX_RETRY_AFTER_MS = 30_000  # the longest wait between two tries, a Retry-After included


TOP_LOGPROBS = 10  # top tokens read for a closed question's answer


class JudgeUnavailable(RuntimeError):
    """The judge endpoint failed after its retries, or answered something that is not a chat completion."""


class Unsupported(JudgeUnavailable):
    """The judge endpoint lacks a request field it was sent: no transient fault, never worth the same call again."""


class JudgeOutputError(ValueError):
    """The judge model's reply does not follow the schema it was asked for (the message never quotes it)."""


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class JudgeBackend(Protocol):
    model: str
    usage: Usage

    @property
    def served(self) -> str:
        """The model as results name it: ``model@version`` once the version is known (configured, or reported
        by the server), so that other weights behind the same name start a new series."""
        ...

    async def complete(self, messages: Messages, schema_name: str, schema: dict[str, Any]) -> str:
        """The reply's text (the JSON the schema asks for); raises JudgeUnavailable after the retries."""
        ...

    async def answer_share(self, messages: Messages, positive: str, negative: str) -> float | None:
        """P(positive) among {positive, negative} for the first token of the reply to ``messages`` (a closed
        question's answer as a probability); None when neither is among the top tokens."""
        ...

    async def close(self) -> None: ...


class GuardBackend(Protocol):
    model: str
    usage: Usage

    @property
    def served(self) -> str: ...

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
    """Chat completions constrained to a JSON schema (judges/structured.py: the dialect the endpoint speaks,
    the reply checked against the schema) through the gateway's own client
    (upstreams.client.ModelClient.endpoint: one aiohttp connection pool, the one retry policy of every
    outbound call, ``max_retries`` tries more after a connection error, 408, 409, 429 or 5xx).

    Not the ``openai`` SDK: it cost about 11 ms of CPU per call here against 0.3 ms for this client
    (docs/performance.md), and a sample makes 22 calls.
    """

    def __init__(self, config: JudgeLLMConfig) -> None:
        endpoint = UpstreamConfig(url=config.base_url or "", api_key_env=config.api_key_env,
                                  timeout_s=config.timeout_s, retries=config.max_retries, backoff_ms=BACKOFF_BASE_MS,
                                  backoff_max_ms=MAX_RETRY_AFTER_MS, max_connections=config.concurrency)  # fmt: skip
        self.client = ModelClient.endpoint("judge", endpoint, "judge")
        self.model = config.model
        self.max_tokens = config.max_tokens
        self.usage = Usage()
        self._slots = asyncio.Semaphore(config.concurrency)
        tried = DIALECTS if config.structured_output == "auto" else (config.structured_output,)
        self._dialects: list[Dialect] = list(tried)
        self._endpoint = endpoint.url
        self.configured = config.version
        self.reported: str | None = None  # what the server says of the model's version
        self._discovery: asyncio.Task[None] | None = None

    @property
    def served(self) -> str:
        version = self.reported or self.configured
        return f"{self.model}@{version}" if version else self.model

    async def _identify(self) -> None:
        """Asks the server once per backend (every call waits for the answer) what it serves the model as."""
        if self._discovery is None:
            self._discovery = asyncio.ensure_future(self._discover())
        await self._discovery

    async def _discover(self) -> None:
        """The id the server serves the model under, when it says more than the configured name (the local
        engine serves ``<name>@<GGUF sha256 prefix>``; a server with one model, that model's id)."""
        try:
            reply = await self.client.get("/models")
            ids = [m.get("id") for m in orjson.loads(reply.body).get("data", [])] if reply.status == 200 else []
        except (GatewayError, OSError, TimeoutError, orjson.JSONDecodeError, AttributeError):
            return  # the version stays unknown; results name the model alone
        ids = [i for i in ids if isinstance(i, str) and i != self.model]
        mine = [i.removeprefix(f"{self.model}@") for i in ids if i.startswith(f"{self.model}@")]
        if mine or len(ids) == 1:
            self.reported = (mine or ids)[0]

    def _learn(self, reply: dict[str, Any]) -> None:
        """A system_fingerprint names the serving configuration (vLLM, OpenAI): a new one starts a new series."""
        fingerprint = reply.get("system_fingerprint")
        if isinstance(fingerprint, str) and fingerprint:
            self.reported = fingerprint

    async def complete(self, messages: Messages, schema_name: str, schema: dict[str, Any]) -> str:
        text = await self._structured(messages, schema_name, schema)
        problem = mismatch(text, schema)
        if problem is not None:  # the judge decides whether to ask again
            raise JudgeOutputError(f"{schema_name}: the judge's reply does not follow the schema ({problem})")
        return text

    async def _structured(self, messages: Messages, name: str, schema: dict[str, Any]) -> str:
        """The reply's text, in the first dialect the endpoint accepts (tried once per backend, then kept)."""
        await self._identify()
        while True:
            dialect = self._dialects[0]
            payload = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens,
                       **request_fields(dialect, name, schema)}  # fmt: skip
            try:
                reply = await self._post("/chat/completions", payload)
            except Unsupported as lacking:
                self._drop(dialect, lacking)
                continue
            self._learn(reply)
            usage = reply.get("usage") or {}
            self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
            try:
                return str(reply["choices"][0]["message"]["content"] or "")
            except (KeyError, IndexError, TypeError):
                raise JudgeUnavailable("the judge endpoint's reply is not a chat completion") from None

    def _drop(self, dialect: Dialect, lacking: Unsupported) -> None:
        """Stops asking in ``dialect``, saying so once; raises when no dialect is left."""
        if self._dialects[0] != dialect:
            return  # a call in flight at the same time dropped it already
        if len(self._dialects) == 1:
            message = (f"the judge endpoint {self._endpoint} accepts no structured output this judge can ask for "
                       f"(judging.llm.structured_output; last tried: {dialect}): {lacking}")  # fmt: skip
            log.error("%s", message)
            raise JudgeUnavailable(message) from None
        self._dialects.pop(0)
        log.warning("the judge endpoint %s does not take structured output as %s (%s); asking as %s from now on",
                    self._endpoint, dialect, lacking, self._dialects[0])  # fmt: skip

    async def answer_share(self, messages: Messages, positive: str, negative: str) -> float | None:
        """A chat completion of one token with its top log-probabilities (OpenAI's ``logprobs`` and
        ``top_logprobs``, which vLLM and llama.cpp's server also take)."""
        await self._identify()
        payload = {"model": self.model, "messages": messages, "max_tokens": 1, "temperature": 0, "logprobs": True,
                   "top_logprobs": TOP_LOGPROBS}  # fmt: skip
        reply = await self._post("/chat/completions", payload)
        self._learn(reply)
        try:
            top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            ranked = {str(t["token"]): float(t["logprob"]) for t in top}
        except (KeyError, IndexError, TypeError, ValueError):
            raise JudgeUnavailable("the judge endpoint's reply has no top log-probabilities") from None
        return _share(ranked, positive, negative)

    async def first_token_probability(self, prompt: str, positive: str, negative: str) -> float | None:
        """A raw completions call for one token with the top log-probabilities (a guard model's verdict)."""
        await self._identify()
        payload = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "logprobs": 5}
        reply = await self._post("/completions", payload)
        try:
            top = reply["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise JudgeUnavailable("the guard endpoint's reply has no top log-probabilities") from None
        return _share(top, positive, negative)

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The endpoint's JSON answer; JudgeUnavailable when every try failed or the answer is no JSON object."""
        async with self._slots:
            try:
                reply = await self.client.post(path, payload)
            except GatewayError as error:
                raise JudgeUnavailable(f"the judge endpoint failed: {error.message}") from None
        self.usage.calls += 1
        if reply.status != 200:
            lacking = unsupported(reply.body)
            if lacking is not None:
                raise Unsupported(f"it answered {reply.status}: {lacking[:200]}")
            raise JudgeUnavailable(f"the judge endpoint answered {reply.status}")
        try:
            body = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            raise JudgeUnavailable("the judge endpoint's reply is not a JSON object")
        return body

    async def close(self) -> None:
        await self.client.close()


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
        self.served = f"{config.model}@{config.version}" if config.version else config.model
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

    async def answer_share(self, messages: Messages, positive: str, negative: str) -> float | None:
        from vllm import SamplingParams

        tokenizer = await self._chat_tokenizer()
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        params = SamplingParams(temperature=0, max_tokens=1, logprobs=TOP_LOGPROBS)
        final: Any = None
        async with self._slots:
            async for output in self.engine.generate(prompt, params, request_id=f"share-{uuid.uuid4().hex}"):
                final = output
        if final is None or not final.outputs or not final.outputs[0].logprobs:
            return None
        self.usage.calls += 1
        top = final.outputs[0].logprobs[0]  # token id -> Logprob(logprob, rank, decoded_token)
        return _share({p.decoded_token: p.logprob for p in top.values()}, positive, negative)

    async def close(self) -> None:
        shutdown = getattr(self.engine, "shutdown", None)
        if shutdown is not None:
            shutdown()

    async def _chat_tokenizer(self) -> Any:
        if self._tokenizer is None:
            tokenizer = self.engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return self._tokenizer
