"""A fake OpenAI-compatible upstream on loopback whose every answer a test scripts.

It is a real aiohttp server on 127.0.0.1, running on an event loop in a thread of its own, so the gateway
under test reaches it over real HTTP. It records every request it receives (method, path, headers, body
bytes and parsed JSON) and whether a request's handler was cancelled because the caller went away.

Scripting: ``fake.script(path, spec, spec, ...)`` queues answers for a path; each request takes the next
one and the last one is repeated. A spec is one of

- ``Json(body, status, headers, delay_s)``: a whole body (a dict/list is encoded compactly, bytes go as-is);
  ``error(status, ...)`` builds one with an OpenAI error body;
- ``Stream(chunks, ...)``: server-sent events, OpenAI style; when the request asks for
  ``stream_options.include_usage`` every chunk carries ``"usage": null`` and a last chunk with
  ``choices: []`` and the usage comes before ``[DONE]``. Items of ``chunks`` may also be ``Sleep``,
  ``Gate`` (wait for a threading.Event the test sets), ``Hang`` (wait until cancelled) or ``Abort``
  (drop the connection);
- ``Hang()`` or ``Abort()`` on their own: never answer, or drop the connection before answering;
- a callable taking the ``Recorded`` request and returning one of the above.

Unscripted paths get plausible defaults (chat and text completions, streamed or not, embeddings, models).

Like vLLM and llama-cpp-python (FastAPI), it refuses a POST body not declared as JSON, before any script:
400 with an OpenAI error body, the request still recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

COMPACT = (",", ":")
SPACED = (", ", ": ")
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
CREATED = 1_700_000_000


# --------------------------------------------------------------------------------------------- specs


@dataclass
class Json:
    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"

    def body_bytes(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=COMPACT).encode()


@dataclass
class Sleep:
    seconds: float


@dataclass
class Gate:
    """Wait until the test sets ``event`` (at most ``timeout_s``)."""

    event: threading.Event
    timeout_s: float = 10.0


@dataclass
class Hang:
    """Wait until the request is cancelled (the caller went away)."""


@dataclass
class Abort:
    """Drop the connection without a proper end."""


Item = dict[str, Any] | bytes | Sleep | Gate | Hang | Abort


@dataclass
class Stream:
    chunks: list[Item]
    delay_s: float = 0.0  # before every chunk
    usage: dict[str, Any] | None = field(default_factory=lambda: dict(USAGE))
    done: bool = True
    separators: tuple[str, str] = COMPACT
    usage_first: bool = False  # put "usage": null first in each chunk instead of right after "choices"
    end: bytes = b"\n\n"  # what ends each event (b"\r\n\r\n" is valid SSE too)
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def events(self, include_usage: bool) -> list[bytes | Sleep | Gate | Hang | Abort]:
        """What the fake writes, in order: event bytes and control items."""
        out: list[bytes | Sleep | Gate | Hang | Abort] = []
        first: dict[str, Any] | None = None
        for item in self.chunks:
            if isinstance(item, dict):
                first = first or item
                out.append(self._event(self._with_usage_null(item) if include_usage else item))
            else:
                out.append(item)
        if include_usage and self.usage is not None and first is not None:
            base = {k: v for k, v in first.items() if k not in {"choices", "usage"}}
            out.append(self._event({**base, "choices": [], "usage": self.usage}))
        if self.done:
            out.append(b"data: [DONE]" + self.end)
        return out

    def wire(self, include_usage: bool) -> bytes:
        """The exact bytes the fake sends for this stream: up to a Hang or Abort, control items left out."""
        sent = []
        for event in self.events(include_usage):
            if isinstance(event, Hang | Abort):
                break
            if isinstance(event, bytes):
                sent.append(event)
        return b"".join(sent)

    def _event(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(chunk, separators=self.separators, ensure_ascii=False).encode() + self.end

    def _with_usage_null(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if "usage" in chunk:
            return chunk
        if self.usage_first:
            return {"usage": None, **chunk}
        out: dict[str, Any] = {}
        for key, value in chunk.items():
            out[key] = value
            if key == "choices":
                out["usage"] = None
        if "usage" not in out:
            out["usage"] = None
        return out


Spec = Json | Stream | Hang | Abort
Scripted = Spec | Callable[["Recorded"], Spec]


def error(
    status: int,
    message: str = "upstream says no",
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> Json:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Json(body, status=status, headers=headers or {})


# ------------------------------------------------------------------------------------ canned bodies


def chat_completion(content: str = "Hello there.", model: str = "gpt-test", **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake1",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": dict(USAGE),
        **extra,
    }


def chat_chunks(pieces: list[str], model: str = "gpt-test", finish_reason: str = "stop") -> list[dict[str, Any]]:
    """OpenAI-style chunks: a role chunk, one per piece, then an empty delta with the finish reason."""
    base = {
        "id": "chatcmpl-fake-stream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "system_fingerprint": "fp_fake",
    }
    choice = {"index": 0, "logprobs": None, "finish_reason": None}
    chunks = [{**base, "choices": [{**choice, "delta": {"role": "assistant", "content": ""}}]}]
    chunks += [{**base, "choices": [{**choice, "delta": {"content": p}}]} for p in pieces]
    chunks.append({**base, "choices": [{**choice, "delta": {}, "finish_reason": finish_reason}]})
    return chunks


def text_completion(text: str = "Hello there.", model: str = "gpt-test-instruct") -> dict[str, Any]:
    return {
        "id": "cmpl-fake1",
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
        "usage": dict(USAGE),
    }


def embeddings(count: int = 1, model: str = "embed-test") -> dict[str, Any]:
    data = [{"object": "embedding", "index": i, "embedding": [0.25, -0.5, 0.125 * (i + 1)]} for i in range(count)]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 3, "total_tokens": 3}}


def models_list(*names: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "fake"} for n in names]}


# ---------------------------------------------------------------------------------------- the fake


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes
    json: Any
    received_at: float
    disconnected: bool = False

    @property
    def wants_usage(self) -> bool:
        options = self.json.get("stream_options") if isinstance(self.json, dict) else None
        return isinstance(options, dict) and options.get("include_usage") is True


class FakeUpstream:
    """A scripted OpenAI-compatible server; ``url`` is its base URL including ``/v1``."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.disconnected = threading.Event()  # set when a request's handler was cancelled by its caller
        self.port = 0
        self._scripts: dict[str, list[Scripted]] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)
        self._runner: web.AppRunner | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    # -- scripting and inspection ------------------------------------------------------------------

    def script(self, path: str, *specs: Scripted) -> None:
        """Queue answers for ``path`` (e.g. "/v1/chat/completions"); the last one repeats."""
        assert specs, "script at least one answer"
        with self._lock:
            self._scripts[path] = list(specs)

    def wait_for_requests(self, count: int, timeout_s: float = 5.0) -> list[Recorded]:
        deadline = time.monotonic() + timeout_s
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fake upstream got {len(self.requests)} requests, expected {count}")
            time.sleep(0.005)
        return list(self.requests)

    @property
    def last(self) -> Recorded:
        assert self.requests, "the fake upstream received no request"
        return self.requests[-1]

    def _next(self, path: str) -> Scripted | None:
        with self._lock:
            queue = self._scripts.get(path)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]

    # -- serving -----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = Recorded(
            request.method,
            request.path,
            request.query_string,
            CIMultiDict(request.headers),
            body,
            parsed,
            time.monotonic(),
        )
        self.requests.append(record)
        if request.method == "POST" and request.content_type != "application/json":
            return web.json_response(error(400, "Expected a JSON body (content-type: application/json)").body,
                                     status=400)  # fmt: skip
        scripted = self._next(request.path)
        if callable(scripted):
            scripted = scripted(record)
        spec = scripted if scripted is not None else _default(record)
        try:
            return await self._respond(request, record, spec)
        except (asyncio.CancelledError, ConnectionResetError):
            if not self._stopping:
                record.disconnected = True
                self.disconnected.set()
            raise

    async def _respond(self, request: web.Request, record: Recorded, spec: Spec) -> web.StreamResponse:
        if isinstance(spec, Hang):
            await asyncio.sleep(3600)
        if isinstance(spec, Abort):
            return await self._abort(request)
        if isinstance(spec, Json):
            if spec.delay_s:
                await asyncio.sleep(spec.delay_s)
            headers = {"Content-Type": spec.content_type, **spec.headers}
            return web.Response(status=spec.status, body=spec.body_bytes(), headers=headers)
        assert isinstance(spec, Stream), f"not a spec: {spec!r}"
        return await self._stream(request, record, spec)

    async def _stream(self, request: web.Request, record: Recorded, spec: Stream) -> web.StreamResponse:
        response = web.StreamResponse(status=spec.status, headers={"Content-Type": "text/event-stream", **spec.headers})
        await response.prepare(request)
        for item in spec.events(record.wants_usage):
            if isinstance(item, bytes):
                if spec.delay_s:
                    await asyncio.sleep(spec.delay_s)
                await response.write(item)
            elif isinstance(item, Sleep):
                await asyncio.sleep(item.seconds)
            elif isinstance(item, Gate):
                await self._wait_gate(item)
            elif isinstance(item, Hang):
                await asyncio.sleep(3600)
            else:
                return await self._abort(request)
        await response.write_eof()
        return response

    async def _wait_gate(self, gate: Gate) -> None:
        deadline = time.monotonic() + gate.timeout_s
        while not gate.event.is_set() and not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _abort(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        assert transport is not None
        transport.abort()
        # The lost connection cancels this handler; that cancellation is ours, not the caller's.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)
        return web.Response(status=500)


def _default(record: Recorded) -> Spec:
    payload = record.json if isinstance(record.json, dict) else {}
    model = payload.get("model", "gpt-test")
    stream = payload.get("stream") is True
    if record.path == "/v1/chat/completions":
        return Stream(chat_chunks(["Hello", " there."], model)) if stream else Json(chat_completion(model=model))
    if record.path == "/v1/completions":
        return Json(text_completion(model=model))
    if record.path == "/v1/embeddings":
        inputs = payload.get("input")
        return Json(embeddings(len(inputs) if isinstance(inputs, list) else 1, model))
    if record.path == "/v1/models" and record.method == "GET":
        return Json(models_list("gpt-test"))
    return error(404, f"no route {record.path}", code="unknown_url")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
