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
        [--answer-file answer.txt] [--chunk-words 4]

``--answer-delay-ms`` holds a complete (non-streamed) answer back that long, as a model takes time to write one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
from pathlib import Path

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


class UpstreamProtocol(asyncio.Protocol):
    chunk_delay = 0.0
    answer_delay = 0.0

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
            asyncio.get_running_loop().call_later(self.answer_delay, self._late_answer, close)
            return False
        else:
            self.transport.write(RESP_COMPLETION)
        if close:
            self.transport.close()
            return False
        return True

    def _late_answer(self, close: bool) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(RESP_COMPLETION)
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
    print(f"fake upstream listening on http://{host}:{port}/v1", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
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
    a = p.parse_args()
    UpstreamProtocol.chunk_delay = a.chunk_delay_ms / 1000.0
    UpstreamProtocol.answer_delay = a.answer_delay_ms / 1000.0
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
