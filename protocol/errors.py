"""The gateway's error catalogue: typed exceptions rendered once into the OpenAI error envelope.

Every error a client can see is one of these classes; the envelope is
``{"error": {"message", "type", "param", "code"}}`` exactly as the OpenAI API shapes it.
Messages never echo request content: clinical text is PHI.
"""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """Base class: an error with an HTTP status and an OpenAI error type and code."""

    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    headers: tuple[tuple[bytes, bytes], ...] = ()  # response headers the status calls for

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        """The OpenAI-shaped JSON body of this error."""
        return render_error(self.message, self.type, self.param, self.code)


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    headers = ((b"www-authenticate", b"Bearer"),)


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.headers = ((b"allow", allow.encode()),)


class RequestTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamUnreachable(GatewayError):
    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamUnreadable(GatewayError):
    """The upstream's answer could not be read in the shape the client would parse it, so no policy could check
    it: it does not go out (a policy that declares ``fail_open`` lets it through instead)."""

    status = 502
    type = "upstream_error"
    code = "upstream_unreadable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class ProviderError(GatewayError):
    """A non-OpenAI provider (through litellm) failed; status follows the provider's."""

    type = "upstream_error"
    code = "provider_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status if 400 <= status <= 599 else 502


def render_error(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})
