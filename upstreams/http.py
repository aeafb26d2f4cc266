"""Upstreams that speak the OpenAI protocol, reached directly over HTTP with aiohttp.

Each upstream owns its own connection pool, so a slow or failing upstream cannot hold connections that
requests to another upstream need. Bodies pass through as bytes; nothing is re-encoded on this path.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from config import UpstreamConfig
from protocol.tasks import TASK_HEADER

# Headers that describe one hop, or that the gateway sets itself; never copied between hops.
HOP_HEADERS = frozenset(
    {
        "host", "connection", "keep-alive", "proxy-authorization", "proxy-authenticate", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade", "content-length", "content-encoding",
        "accept-encoding", "authorization", "api-key", "x-request-id", "cookie", "set-cookie",
    }
)  # fmt: skip
# Client headers never forwarded upstream: those, and the headers that only instruct the gateway.
NOT_FORWARDED = HOP_HEADERS | {TASK_HEADER}
# HOP_HEADERS as the raw lower-case bytes an ASGI server hands over; plus the date the server sets itself.
RAW_HOP_HEADERS = frozenset(name.encode() for name in HOP_HEADERS | {"date"})
RawHeaders = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Reply:
    """An upstream's answer: the whole body, or for a relayed stream its first bytes and the rest to come."""

    status: int
    headers: RawHeaders  # lower-case names, hop-by-hop headers already removed
    body: bytes
    rest: AsyncIterator[bytes] | None = None
    close: Callable[[], object] | None = None
    usage_injected: bool = False


@dataclass(slots=True)
class Call:
    """One request to send upstream: the path under /v1, the body as received and the client's headers."""

    path: str
    body: bytes
    payload: dict[str, Any]
    stream: bool
    request_id: str
    client_headers: Iterable[tuple[bytes, bytes]]
    client_auth: str | None
    trace_headers: dict[str, str] = field(default_factory=dict)

    @property
    def wants_usage(self) -> bool:
        options = self.payload.get("stream_options")
        return isinstance(options, dict) and options.get("include_usage") is True

    def body_for(self, model: str, inject_usage: bool) -> bytes:
        """The body for an upstream: the client's bytes unchanged unless the model name or usage differ."""
        if not inject_usage and model == self.payload.get("model"):
            return self.body
        payload = dict(self.payload, model=model)
        if inject_usage:
            options = payload.get("stream_options")
            payload["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return orjson.dumps(payload)


class Upstream(Protocol):
    name: str
    config: UpstreamConfig

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, call: Call, model: str) -> Reply: ...


class HttpUpstream:
    """An OpenAI-compatible upstream (OpenAI, vLLM, TGI, Ollama, Azure OpenAI...)."""

    def __init__(self, name: str, config: UpstreamConfig, forward_client_auth: bool) -> None:
        self.name = name
        self.config = config
        self._base = config.url.rstrip("/")
        self._forward_client_auth = forward_client_auth
        self._auth = self._auth_header(config)
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, str], URL] = {}
        self._timeout = aiohttp.ClientTimeout(
            total=config.timeout_s, sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s
        )

    @staticmethod
    def _auth_header(config: UpstreamConfig) -> tuple[str, str] | None:
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if not key:
            return None
        if config.provider == "azure":
            return ("api-key", key)
        return ("Authorization", f"Bearer {key}")

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.config.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        # No cookie jar: cookies from one client's upstream reply must never reach another client's request.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            skip_auto_headers=("User-Agent",),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, path: str, model: str) -> URL:
        """The upstream URL, parsed once per path and model (parsing costs more than the lookup)."""
        url = self._urls.get((path, model))
        if url is None:
            if self.config.provider == "azure":
                text = f"{self._base}/openai/deployments/{model}{path}?api-version={self.config.api_version}"
            else:
                text = self._base + path
            url = URL(text)
            if len(self._urls) < 1024:  # model names can come from clients: keep the cache bounded
                self._urls[(path, model)] = url
        return url

    def headers(self, call: Call) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for raw_name, raw_value in call.client_headers:
            name = raw_name.decode("latin-1")
            if name.lower() not in NOT_FORWARDED:
                headers.add(name, raw_value.decode("latin-1"))
        headers["x-request-id"] = call.request_id
        headers.update(call.trace_headers)
        if self._auth is not None:
            headers[self._auth[0]] = self._auth[1]
        elif self._forward_client_auth and call.client_auth:
            headers["Authorization"] = call.client_auth
        return headers

    async def send(self, call: Call, model: str) -> Reply:
        assert self._session is not None, "upstream used before start()"
        inject = call.stream and self.config.stream_usage and call.path != "/embeddings" and not call.wants_usage
        body = call.body_for(model, inject)
        response = await self._session.post(
            self.url(call.path, model), data=body, headers=self.headers(call), allow_redirects=False
        )
        try:
            headers = _response_headers(response.raw_headers)
            if not call.stream or response.status != 200 or not _event_stream(response.content_type):
                # a stream asked for and a whole answer given comes back whole: it is read (and checked) as one
                return Reply(response.status, headers, await response.read())
            first = await response.content.readany()
            if not first:
                raise aiohttp.ClientPayloadError("stream ended before its first byte")
        except BaseException:
            response.close()
            raise
        return Reply(200, headers, first, response.content.iter_any(), response.close, usage_injected=inject)

    async def get(self, path: str, client_auth: str | None = None) -> Reply:
        assert self._session is not None, "upstream used before start()"
        headers = {self._auth[0]: self._auth[1]} if self._auth else {}
        if not headers and self._forward_client_auth and client_auth:
            headers["Authorization"] = client_auth
        async with self._session.get(self._base + path, headers=headers) as response:
            return Reply(response.status, _response_headers(response.raw_headers), await response.read())


def _event_stream(content_type: str) -> bool:
    """Whether a reply is an event stream; an upstream that names no type is taken at its word that it is one."""
    return content_type in ("text/event-stream", "application/octet-stream")


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    headers = []
    for name, value in raw:
        lower = name.lower()
        if lower not in RAW_HOP_HEADERS:
            headers.append((lower, value))
    return headers
