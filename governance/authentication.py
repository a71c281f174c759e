"""Knox tokens (hashed, expiring, one per client) carrying a scope: a name and a set of roles."""

from __future__ import annotations

from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from knox.auth import TokenAuthentication


class ScopedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <token>``; the token's scope rides along on ``request.auth``."""

    def authenticate_header(self, request) -> str:
        return "Token"


class ScopedTokenScheme(KnoxTokenScheme):
    """Documents ``ScopedTokenAuthentication`` in the OpenAPI schema (registered on definition)."""

    target_class = "governance.authentication.ScopedTokenAuthentication"
    name = "tokenAuth"
