"""The small ASGI vocabulary the gateway speaks, with no framework between it and the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from protocol.errors import GatewayError, RequestTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = (b"content-type", b"application/json")


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: list[tuple[bytes, bytes]]
    receive: Receive
    body: bytes = b""
    query: bytes = b""

    @classmethod
    def from_scope(cls, scope: Scope, receive: Receive) -> Request:
        return cls(scope["method"], scope["path"], scope["headers"], receive, query=scope.get("query_string", b""))

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:  # ASGI servers lower-case header names
                return value.decode("latin-1")
        return None

    @property
    def authorization(self) -> str | None:
        return self.header(b"authorization")

    def trace_carrier(self) -> dict[str, str]:
        names = {b"traceparent", b"tracestate", b"baggage"}
        return {k.decode(): v.decode("latin-1") for k, v in self.headers if k in names}

    async def read_body(self, limit: int) -> bytes:
        """The whole body; RequestTooLarge as soon as it passes the limit."""
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise RequestTooLarge(f"The request body is larger than the limit of {limit} bytes.")
            if not message.get("more_body", False):
                self.body = part if not parts else b"".join([*parts, part])
                return self.body
            parts.append(part)


def start_headers(status: int, headers: list[tuple[bytes, bytes]], request_id: str, length: int | None) -> Message:
    raw = [*headers, (b"x-request-id", request_id.encode())]
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": raw}


async def send_json(send: Send, status: int, body: bytes, request_id: str, extra: list[Any] | None = None) -> None:
    headers = [JSON, (b"content-length", str(len(body)).encode()), (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, request_id: str) -> None:
    await send_json(send, error.status, error.body(), request_id, list(error.headers))
