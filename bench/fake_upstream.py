"""A minimal, fast, fake OpenAI-compatible upstream for benchmarks.

Answers every POST (e.g. /v1/chat/completions) with a fixed, valid `chat.completion` JSON including
`usage`; when the request body asks for `"stream": true` it answers with a few Server-Sent-Events chunks
(`text/event-stream`, chunked transfer encoding), an extra usage chunk when
`stream_options.include_usage` is set, and `data: [DONE]`. Every GET answers with a model list
(`/v1/models`), so it also serves as a health check.

It is a raw asyncio Protocol speaking just enough HTTP/1.1 (keep-alive, Content-Length bodies, pipelined
requests) so that it adds as little as possible to what is being measured: ~0.1 ms per request on
loopback. It uses uvloop when installed and only the standard library otherwise.

The answer is "Hello! How can I help you today?" unless ``--answer-file FILE`` (or the environment variable
``BENCH_ANSWER_FILE``) names a text file, read once at start: then both answers carry that text (stripped of
surrounding white space), the complete one as its message content, the streamed one cut into chunks of
``--chunk-words`` words (default 4; each chunk keeps the white space before its first word, so the chunks join
back into the text), and ``usage.completion_tokens`` is the text's word count.

    python bench/fake_upstream.py --port 9100 [--host 127.0.0.1] [--chunk-delay-ms 0] [--answer-delay-ms 0]
        [--answer-file answer.txt] [--chunk-words 4] [--judge]

``--port 0`` takes a free port; the first line printed names it. ``--answer-delay-ms`` holds a complete
(non-streamed) answer back that long, as a model takes time to write one.

``--judge`` makes it a judge model instead (bench/fidelity_speed.py, bench/judge_client.py): it then routes by
method and path and checks each request as an OpenAI-compatible server would, answering 404 to any other route
and 400 with an OpenAI error body to a request it cannot serve.

* ``POST /v1/chat/completions`` takes only structured-output calls: a JSON object with ``model``, a non-empty
  ``messages`` list of ``{"role", "content"}`` objects and ``response_format`` ``{"type": "json_schema",
  "json_schema": {"name", "schema"}}``, not streamed. After ``--answer-delay-ms`` it answers a ``chat.completion``
  whose content is JSON that the schema accepts: the first value of every ``enum``, each required property of an
  object, ``minItems`` items of an array, the minimum of a number, and for a free string a yes/no question on the
  next sentence of the last message's text (at least ``minLength`` characters), so that the judges' calls carry
  questions of a real length. ``usage`` counts words as tokens.
* ``GET /v1/models``: the model list (a health check).
* ``POST /bench/stats``: ``{"calls", "max_in_flight", "cpu_s"}`` since the previous ``POST /bench/stats`` (or the
  start): the completions answered, the most held at once, and this process's CPU seconds; it starts a new window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

MODEL = "bench-model"
CREATED = 1_700_000_000

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
    },
    separators=(",", ":"),
).encode()

MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}]},
    separators=(",", ":"),
).encode()


def _chunk(delta: dict[str, object], finish: str | None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


_STREAM_CHUNKS = [
    _chunk({"role": "assistant", "content": ""}, None),
    _chunk({"content": "Hello!"}, None),
    _chunk({"content": " How can I"}, None),
    _chunk({"content": " help you today?"}, None),
    _chunk({}, "stop"),
]
_USAGE_CHUNK = {
    "id": "chatcmpl-bench0001",
    "object": "chat.completion.chunk",
    "created": CREATED,
    "model": MODEL,
    "system_fingerprint": "fp_bench",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}


def _sse(obj: object) -> bytes:
    data = b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode())
    return data + b"\n\n"


def _http_chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


SSE_EVENTS = [_sse(c) for c in _STREAM_CHUNKS]
SSE_USAGE = _sse(_USAGE_CHUNK)
SSE_DONE = _sse(b"[DONE]")

_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')


def _response(status: bytes, ctype: bytes, body: bytes, keep_alive: bool) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            ctype,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n" if keep_alive else b"\r\nConnection: close\r\n",
            b"\r\n",
            body,
        )
    )


RESP_COMPLETION = _response(b"200 OK", b"application/json", COMPLETION, True)


def use_answer(text: str, chunk_words: int = 4) -> None:
    """Answer with ``text`` from now on: as the complete answer's content, and streamed in chunks of
    ``chunk_words`` words; ``usage`` counts its words as completion tokens."""
    global COMPLETION, RESP_COMPLETION, SSE_EVENTS, SSE_USAGE
    text = text.strip()
    words = re.findall(r"\s*\S+", text)
    pieces = ["".join(words[i : i + chunk_words]) for i in range(0, len(words), max(1, chunk_words))]
    usage = {"prompt_tokens": 12, "completion_tokens": len(words), "total_tokens": 12 + len(words)}
    completion = json.loads(COMPLETION)
    completion["choices"][0]["message"]["content"] = text
    completion["usage"] = usage
    COMPLETION = json.dumps(completion, separators=(",", ":")).encode()
    RESP_COMPLETION = _response(b"200 OK", b"application/json", COMPLETION, True)
    chunks = [
        _chunk({"role": "assistant", "content": ""}, None),
        *(_chunk({"content": piece}, None) for piece in pieces),
        _chunk({}, "stop"),
    ]
    SSE_EVENTS = [_sse(c) for c in chunks]
    SSE_USAGE = _sse({**_USAGE_CHUNK, "usage": usage})


RESP_MODELS = _response(b"200 OK", b"application/json", MODELS, True)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


class BadRequest(ValueError):
    """A request the fake judge cannot serve; the message goes into the 400 answer."""


class JudgeStats:
    """The fake judge's counts over the current window (``POST /bench/stats`` reads them and starts another)."""

    calls = 0
    in_flight = 0
    max_in_flight = 0
    cpu = time.process_time()

    @classmethod
    def window(cls) -> bytes:
        now = time.process_time()
        stats = {"calls": cls.calls, "max_in_flight": cls.max_in_flight, "cpu_s": now - cls.cpu}
        cls.calls, cls.max_in_flight, cls.cpu = 0, cls.in_flight, now
        return json.dumps(stats).encode()


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def judge_completion(body: bytes) -> bytes:
    """The ``chat.completion`` body answering one structured-output call; raises BadRequest for a bad one."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not JSON") from None
    if not isinstance(request, dict):
        raise BadRequest("the body is not a JSON object")
    model, messages = request.get("model"), request.get("messages")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise BadRequest("each message needs a 'role' and a 'content'")
    if request.get("stream"):
        raise BadRequest("the fake judge does not stream")
    response_format = request.get("response_format")
    spec = response_format.get("json_schema") if isinstance(response_format, dict) else None
    if response_format is None or response_format.get("type") != "json_schema" or not isinstance(spec, dict):
        raise BadRequest("'response_format' must be {'type': 'json_schema', 'json_schema': {...}}")
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema"), dict):
        raise BadRequest("'json_schema' needs a 'name' and a 'schema' object")
    last = messages[-1]["content"]
    sentences = [s for s in _SENTENCE_END.split(last if isinstance(last, str) else "") if len(s.split()) >= 3]
    content = json.dumps(_instance(spec["schema"], [s.strip().rstrip(".!?") for s in sentences]), separators=(",", ":"))
    prompt = sum(len(m["content"].split()) for m in messages if isinstance(m["content"], str))
    words = len(content.split())
    completion = {
        "id": f"chatcmpl-judge{JudgeStats.calls}",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": words, "total_tokens": prompt + words},
    }
    return json.dumps(completion, separators=(",", ":")).encode()


def _instance(schema: dict[str, Any], sentences: list[str], index: int = 0) -> Any:
    """A value the JSON schema accepts (the subset structured outputs use); string ``index`` picks a sentence."""
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _instance(schema[key][0], sentences, index)
    if "enum" in schema or "const" in schema:
        return schema["enum"][0] if "enum" in schema else schema["const"]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: _instance(properties.get(name, {}), sentences) for name in schema.get("required", properties)}
    if kind == "array":
        count = schema.get("minItems", min(1, schema.get("maxItems", 1)))
        return [_instance(schema.get("items", {}), sentences, i) for i in range(count)]
    if kind != "string":
        return {"integer": schema.get("minimum", 0), "number": schema.get("minimum", 0), "boolean": True}.get(kind)
    fact = sentences[index % len(sentences)] if sentences else f"statement {index + 1} holds"
    text = f"Does the text state that {fact}?".ljust(schema.get("minLength", 0), ".")
    return text[: schema["maxLength"]] if "maxLength" in schema else text


def _error(status: bytes, message: str, kind: str, close: bool) -> bytes:
    error = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return _response(status, b"application/json", json.dumps(error).encode(), not close)


class UpstreamProtocol(asyncio.Protocol):
    chunk_delay = 0.0
    answer_delay = 0.0
    judge = False  # answer as a judge model (--judge): routes, strict checks, structured answers

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written; queue further requests

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self) -> None:
        assert self.transport is not None
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            hl = head.lower()
            clen = 0
            i = hl.find(b"\r\ncontent-length:")
            if i >= 0:
                j = hl.find(b"\r\n", i + 2)
                clen = int(hl[i + 17 : j if j >= 0 else len(hl)])
            elif b"\r\ntransfer-encoding: chunked" in hl:
                body_end = self.buf.find(b"\r\n0\r\n\r\n", end + 4)
                if body_end < 0:
                    return
                body = _dechunk(self.buf[end + 4 : body_end + 7])
                self.buf = self.buf[body_end + 7 :]
                if not self._answer(head, body, hl):
                    return
                continue
            total = end + 4 + clen
            if len(self.buf) < total:
                return
            body = self.buf[end + 4 : total]
            self.buf = self.buf[total:]
            if not self._answer(head, body, hl):
                return

    def _answer(self, head: bytes, body: bytes, hl: bytes) -> bool:
        """Write the response; returns False if processing must pause (delayed stream)."""
        assert self.transport is not None
        close = b"\r\nconnection: close" in hl
        if self.judge:
            return self._judge(head, body, close)
        if head.startswith(b"GET"):
            self.transport.write(RESP_MODELS)
        elif _STREAM_RE.search(body):
            events = [*SSE_EVENTS, SSE_USAGE] if _USAGE_RE.search(body) else list(SSE_EVENTS)
            events.append(SSE_DONE)
            if self.chunk_delay > 0:
                self.busy = True
                asyncio.get_running_loop().create_task(self._slow_stream(events, close))
                return False
            self.transport.write(STREAM_HEAD + b"".join(_http_chunk(e) for e in events) + b"0\r\n\r\n")
        elif self.answer_delay > 0:
            self.busy = True
            asyncio.get_running_loop().call_later(self.answer_delay, self._late_answer, RESP_COMPLETION, close)
            return False
        else:
            self.transport.write(RESP_COMPLETION)
        return self._keep_reading(close)

    def _keep_reading(self, close: bool) -> bool:
        """After a response: close the connection if the request asked to (and read no more), else go on."""
        assert self.transport is not None
        if close:
            self.transport.close()
            return False
        return True

    def _judge(self, head: bytes, body: bytes, close: bool) -> bool:
        """--judge: one request by its route (see the module's docstring); False while an answer is held back."""
        assert self.transport is not None
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/chat/completions":
            try:
                completion = judge_completion(body)
            except BadRequest as exc:
                response = _error(b"400 Bad Request", str(exc), "invalid_request_error", close)
            else:
                response = _response(b"200 OK", b"application/json", completion, not close)
                JudgeStats.calls += 1
                JudgeStats.in_flight += 1
                JudgeStats.max_in_flight = max(JudgeStats.max_in_flight, JudgeStats.in_flight)
                self.busy = True
                asyncio.get_running_loop().call_later(self.answer_delay, self._late_answer, response, close, True)
                return False
        elif method == b"GET" and path == b"/v1/models":
            response = RESP_MODELS if not close else _response(b"200 OK", b"application/json", MODELS, False)
        elif method == b"POST" and path == b"/bench/stats":
            response = _response(b"200 OK", b"application/json", JudgeStats.window(), not close)
        else:
            response = _error(b"404 Not Found", f"no route {method.decode()} {path.decode()}", "not_found", close)
        self.transport.write(response)
        return self._keep_reading(close)

    def _late_answer(self, response: bytes, close: bool, judged: bool = False) -> None:
        assert self.transport is not None
        if judged:
            JudgeStats.in_flight -= 1
        if self.transport.is_closing():
            return
        self.transport.write(response)
        self.busy = False
        if close:
            self.transport.close()
        elif self.buf:
            self._process()

    async def _slow_stream(self, events: list[bytes], close: bool) -> None:
        assert self.transport is not None
        self.transport.write(STREAM_HEAD)
        for e in events:
            await asyncio.sleep(self.chunk_delay)
            if self.transport.is_closing():
                return
            self.transport.write(_http_chunk(e))
        self.transport.write(b"0\r\n\r\n")
        self.busy = False
        if close:
            self.transport.close()
        elif self.buf:
            self._process()


def _dechunk(raw: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        nl = raw.find(b"\r\n", pos)
        size = int(raw[pos:nl].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[nl + 2 : nl + 2 + size])
        pos = nl + 2 + size + 2


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    port = server.sockets[0].getsockname()[1]  # the one chosen when --port is 0
    print(f"fake upstream listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100, help="0: a free port, printed on the first line")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="pause before each SSE event")
    p.add_argument("--answer-delay-ms", type=float, default=0.0, help="pause before a complete (non-streamed) answer")
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    p.add_argument(
        "--answer-file",
        default=os.environ.get("BENCH_ANSWER_FILE", ""),
        metavar="FILE",
        help="answer with this file's text, complete and streamed (default: $BENCH_ANSWER_FILE, else the built-in "
        "short answer)",
    )
    p.add_argument("--chunk-words", type=int, default=4, help="words per streamed chunk of --answer-file (default 4)")
    p.add_argument("--judge", action="store_true", help="answer as a judge model: structured-output calls only")
    a = p.parse_args()
    UpstreamProtocol.chunk_delay = a.chunk_delay_ms / 1000.0
    UpstreamProtocol.answer_delay = a.answer_delay_ms / 1000.0
    UpstreamProtocol.judge = a.judge
    if a.answer_file:
        use_answer(Path(a.answer_file).read_text(encoding="utf-8"), a.chunk_words)
    if not a.no_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(serve(a.host, a.port))
            return
    asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
