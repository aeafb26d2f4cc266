"""Gateway API keys mapped to tenants.

Keys are compared by SHA-256 digest, so the file may hold digests and memory holds no key in clear.
With no keys configured the gateway is open (any bearer key is accepted, tenant "default") and the CLI
keeps it on loopback unless told otherwise.
"""

from __future__ import annotations

import hashlib
import os

from config import KeyConfig
from protocol.errors import AuthenticationFailed

OPEN_TENANT = "default"


class KeyRing:
    def __init__(self, keys: list[KeyConfig]) -> None:
        self._tenants: dict[str, str] = {}
        for key in keys:
            if key.key_sha256:
                self._tenants[key.key_sha256] = key.tenant
            elif secret := os.environ.get(key.key_env or ""):
                self._tenants[_digest(secret)] = key.tenant
            # an unset key_env: check-config reports it and serve refuses to start without it

    @property
    def open(self) -> bool:
        return not self._tenants

    def tenant(self, authorization: str | None) -> str:
        """The tenant a request's Authorization header belongs to; AuthenticationFailed if none."""
        if not self._tenants:
            return OPEN_TENANT
        if not authorization:
            raise AuthenticationFailed(
                "You didn't provide an API key. Provide it in the Authorization header as 'Bearer KEY'."
            )
        scheme, _, token = authorization.partition(" ")
        tenant = self._tenants.get(_digest(token.strip())) if scheme.lower() == "bearer" else None
        if tenant is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return tenant


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
