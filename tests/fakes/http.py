"""Raw HTTP on loopback (no SDK in between), server-sent events and Prometheus text, for assertions."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    chunked: bool = False,
) -> RawResponse:
    """One request on a fresh connection; ``base`` is "http://host:port" (any path in it is ignored)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        sent = {"Content-Type": "application/json"} if body is not None else {}
        sent.update(headers or {})
        if chunked:
            conn.request(method, path, body=iter([body or b""]), headers=sent, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return RawResponse(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def post_json(base: str, path: str, payload: Any, headers: dict[str, str] | None = None) -> RawResponse:
    return request(base, "POST", path, json.dumps(payload).encode(), headers)


class StreamReader:
    """Reads a streamed response event by event as it arrives, on a connection the test can drop."""

    def __init__(
        self, base: str, path: str, body: bytes, headers: dict[str, str] | None = None, timeout_s: float = 10.0
    ) -> None:
        parts = urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        self.response = self.conn.getresponse()
        self._buffer = b""

    def next_event(self) -> bytes | None:
        """The next complete event (with its blank line), or None at the end of the body."""
        while b"\n\n" not in self._buffer:
            data = self.response.read1(65536)
            if not data:
                return None
            self._buffer += data
        event, _, self._buffer = self._buffer.partition(b"\n\n")
        return event + b"\n\n"

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def sse_events(body: bytes) -> list[bytes]:
    """A stream body cut into its events, each with its terminating blank line (LF or CRLF)."""
    events = []
    start = 0
    for match in re.finditer(rb"\r?\n\r?\n", body):
        events.append(body[start : match.end()])
        start = match.end()
    assert body[start:] == b"", f"bytes after the last complete event: {body[start:]!r}"
    return events


def sse_data(body: bytes) -> list[str]:
    """The ``data:`` payload of every event."""
    out = []
    for event in sse_events(body):
        lines = [line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")]
        out.append(b"\n".join(lines).decode())
    return out


def chunks_of(body: bytes) -> list[dict[str, Any]]:
    """The JSON chunks of a stream body ([DONE] left out)."""
    return [json.loads(d) for d in sse_data(body) if d != "[DONE]"]


# -------------------------------------------------------------------------------------- prometheus


def samples(text: str, name: str, **labels: str) -> Iterator[float]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                yield sample.value


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when there are none)."""
    return sum(samples(text, name, **labels))


def label_values(text: str, name: str, label: str) -> set[str]:
    found = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and label in sample.labels:
                found.add(sample.labels[label])
    return found


def eventually(check: Callable[[], T], timeout_s: float = 5.0, interval_s: float = 0.02) -> T:
    """Call ``check`` until it returns a truthy value (or stops raising AssertionError); return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
            failure: Exception = AssertionError(f"still {result!r} after {timeout_s} s")
        except AssertionError as exc:
            failure = exc
        if time.monotonic() > deadline:
            raise failure
        time.sleep(interval_s)


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
