"""The evaluations API, behind the admin key: what the judges found, with the evidence behind each score.

GET /v1/evaluations/{request_id}  every result for one request (the id in its x-request-id header)
GET /v1/evaluations?model=&indicator=&method=&tenant=&min_score=&max_score=&since=&until=&limit=
                                   results newest first; since/until in unix seconds; limit at most 1000

The admin key is the value of the environment variable named by results.admin_key_env. Without one, the
API is served only by an open gateway (no keys configured, so on loopback unless told otherwise).
"""

from __future__ import annotations

import base64
import hmac
import os
from typing import Any
from urllib.parse import parse_qsl

import orjson

from config import GatewayConfig
from gateway.asgi import Request, Send, send_json
from pipeline.store import Query, ResultStore
from protocol.errors import AuthenticationFailed, GatewayError, InvalidRequest, NotFound

EVALUATIONS = "/v1/evaluations"
TEXT_FILTERS = ("model", "indicator", "method", "tenant")
NUMBER_FILTERS = ("min_score", "max_score", "since", "until")


class Forbidden(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "admin_key_required"


class AdminKey:
    """The admin key (the variable results.admin_key_env names), shared by the evaluations API and the evidence
    page; ``value`` is empty when none is configured."""

    def __init__(self, config: GatewayConfig) -> None:
        name = config.results.admin_key_env
        self.value = os.environ.get(name, "") if name else ""

    def presented(self, authorization: str | None, basic: bool = False) -> bool:
        """Whether the request carries the key: as a bearer token, or (``basic``) as an HTTP Basic password."""
        scheme, _, token = (authorization or "").partition(" ")
        if basic and scheme.lower() == "basic":
            try:
                token = base64.b64decode(token.strip(), validate=True).decode().partition(":")[2]
            except ValueError:
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self.value.encode())


class Evaluations:
    def __init__(self, store: ResultStore, config: GatewayConfig, gateway_open: bool) -> None:
        self.store = store
        self._key = AdminKey(config)
        self._open = gateway_open

    async def handle(self, request: Request, send: Send, request_id: str) -> None:
        self._authorise(request.authorization)
        rest = request.path.removeprefix(EVALUATIONS).strip("/")
        if rest:
            results = await self.store.get(rest)
            if not results:
                raise NotFound(f"No evaluation for request {rest} (not sampled, not yet judged, or expired).",
                               code="evaluation_not_found")  # fmt: skip
            body: dict[str, Any] = {"object": "list", "request_id": rest, "data": [r.model_dump() for r in results]}
        else:
            results = await self.store.query(_query(request.query))
            body = {"object": "list", "data": [r.model_dump() for r in results]}
        await send_json(send, 200, orjson.dumps(body), request_id)

    def _authorise(self, authorization: str | None) -> None:
        if not self._key.value:
            if self._open:
                return
            raise Forbidden("The evaluations API needs an admin key: set results.admin_key_env.")
        if not self._key.presented(authorization):
            raise AuthenticationFailed("The evaluations API needs the admin key.")


def _query(raw: bytes) -> Query:
    params = dict(parse_qsl(raw.decode("latin-1")))
    unknown = set(params) - {*TEXT_FILTERS, *NUMBER_FILTERS, "limit"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidRequest(f"Unknown filter {name!r}.", param=name)
    numbers: dict[str, float] = {}
    for name in NUMBER_FILTERS:
        if name in params:
            try:
                numbers[name] = float(params[name])
            except ValueError:
                raise InvalidRequest(f"{name} must be a number.", param=name) from None
    limit = params.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise InvalidRequest("limit must be an integer from 1 to 1000.", param="limit")
    texts = {name: params[name] for name in TEXT_FILTERS if name in params}
    return Query(**texts, **numbers, limit=int(limit))  # type: ignore[arg-type]
