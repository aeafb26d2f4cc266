"""HttpUpstream: the call it makes once a request has gone upstream."""

from __future__ import annotations

import socket

import orjson

from config import UpstreamConfig
from upstreams.http import Call, HttpUpstream

ANSWER = b'{"id":"a","object":"chat.completion","choices":[]}'


def reply(connection: socket.socket) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))  # fmt: skip


async def test_on_sent_is_called_once_the_whole_request_has_gone() -> None:
    """When ``on_sent`` runs, the upstream's socket already holds the request, body and all: the callback blocks
    the event loop while it reads, so nothing sent after it was called could arrive."""
    listener = socket.create_server(("127.0.0.1", 0))
    upstream = HttpUpstream("u", UpstreamConfig(url=f"http://127.0.0.1:{listener.getsockname()[1]}/v1"), False)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "chest pain " * 2_000}]})
    received: list[bytes] = []

    def on_sent() -> None:
        connection, _ = listener.accept()
        connection.settimeout(1.0)
        data = b""
        try:
            while not data.endswith(body):
                data += connection.recv(65536)
        except TimeoutError:
            pass
        received.append(data)
        with connection:
            reply(connection)

    call = Call("/chat/completions", body, orjson.loads(body), False, "r1", [], None, on_sent=on_sent)
    await upstream.start()
    try:
        answer = await upstream.send(call, "m")
    finally:
        await upstream.close()
        listener.close()
    assert answer.status == 200 and answer.body == ANSWER
    (data,) = received
    assert data.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and data.endswith(b"\r\n\r\n" + body)
