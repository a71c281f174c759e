"""Authentication and the PREDICT check of the predict endpoint, without per-request queries.

The view reads the routing generations first (one query, or one Redis MGET). The token check is
knox's, done once per token and remembered until the ``__grants__`` generation moves; so is the
answer of ``can(user, PREDICT, model)`` per (user, token scope, model). Every grant change, token
deletion and user change bumps that generation (``serving.signals``), so a revocation or a
deactivation is seen by the next request. Knox's clean-up of a user's other expired tokens is
left to the other endpoints.
"""

from __future__ import annotations

import binascii
import threading
from hmac import compare_digest

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.crypto import hash_token
from knox.models import get_token_model
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.permissions import BasePermission

from governance.authentication import ScopedTokenAuthentication
from governance.permissions import can, request_scopes
from governance.roles import Action


class GatewayTokenAuthentication(ScopedTokenAuthentication):
    """``Authorization: Token <token>``: knox's check, remembered per routing generation.

    A verified token (its digest, user and scope) is kept in memory until the ``__grants__``
    generation moves: revoking a token, changing a user or a grant bumps it, so the next request
    looks the token up again. Expiry is checked on every request. When the generation cannot be
    read, every request does the lookup (one query, user and scope joined).
    """

    def authenticate_credentials(self, token: bytes):
        message = "Invalid token."
        text = token.decode("utf-8", errors="replace")
        try:
            digest = hash_token(text)
        except (TypeError, binascii.Error, ValueError):
            raise exceptions.AuthenticationFailed(message) from None
        grants = _grants_generation(self._request)
        state = _current()
        cached = state.tokens.get(digest)
        if cached is not None and grants is not None and cached[0] == grants:
            auth_token = cached[1]
        else:
            auth_token = _lookup(text, digest)
            if grants is not None:
                with state.lock:
                    if len(state.tokens) >= _MAX_TOKENS:
                        state.tokens.clear()
                    state.tokens[digest] = (grants, auth_token)
        if auth_token.expiry is not None and auth_token.expiry < timezone.now():
            raise exceptions.AuthenticationFailed(message)
        return self.validate_user(auth_token)

    def authenticate(self, request):
        self._request = request
        return super().authenticate(request)


def _grants_generation(request) -> int | None:
    view = (getattr(request, "parser_context", None) or {}).get("view")
    generations = getattr(view, "generations", None)
    return generations[2] if generations is not None else None


def _lookup(text: str, digest: str):
    candidates = (
        get_token_model()
        .objects.filter(token_key=text[: CONSTANTS.TOKEN_KEY_LENGTH])
        .select_related("user", "scope")
    )
    for auth_token in candidates:
        if compare_digest(digest, auth_token.digest):
            return auth_token
    raise exceptions.AuthenticationFailed("Invalid token.")


_MAX_TOKENS = 10_000
_MAX_DECISIONS = 10_000


class Decisions:
    """One gateway's token checks and PREDICT decisions, each valid for one grants generation."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[int, object]] = {}
        self.decisions: dict[tuple, tuple[int, bool]] = {}
        self.lock = threading.Lock()


def _current() -> Decisions:
    from .process import current

    return current().access


def may_predict(user, *, model_name: str, scopes, grants_generation: int | None) -> bool:
    key = (user.pk, tuple(sorted(scopes)) if scopes else None, model_name)
    state = _current()
    cached = state.decisions.get(key)
    if cached is not None and grants_generation is not None and cached[0] == grants_generation:
        return cached[1]
    allowed = can(user, Action.PREDICT, model=model_name, scopes=scopes)
    if grants_generation is not None:
        with state.lock:
            if len(state.decisions) >= _MAX_DECISIONS:
                state.decisions.clear()
            state.decisions[key] = (grants_generation, allowed)
    return allowed


def remembered_token(digest: str, grants_generation: int):
    """The token whose check this gateway remembers for this grants generation, unexpired;
    None when it must be checked again (``serving.fast_path``)."""
    cached = _current().tokens.get(digest)
    if cached is None or cached[0] != grants_generation:
        return None
    auth_token = cached[1]
    if auth_token.expiry is not None and auth_token.expiry < timezone.now():
        return None
    return auth_token


def remembered_decision(auth_token, model_name: str, grants_generation: int) -> bool | None:
    """The PREDICT decision remembered for this token's user and scope on ``model_name`` in this
    grants generation (None: not made yet); the key is ``may_predict``'s."""
    scope = getattr(auth_token, "scope", None)
    scopes = list(scope.roles) if scope is not None and scope.roles else None
    key = (auth_token.user.pk, tuple(sorted(scopes)) if scopes else None, model_name)
    cached = _current().decisions.get(key)
    if cached is None or cached[0] != grants_generation:
        return None
    return cached[1]


def clear() -> None:
    from .process import current

    current().access = Decisions()


class PredictPermission(BasePermission):
    """PREDICT for the model in the URL (``ci`` globally, or any role granting it per model)."""

    message = "You do not hold a role that allows this."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        name = view.kwargs.get("name", "")
        grants = view.generations[2] if view.generations is not None else None
        allowed = may_predict(
            request.user,
            model_name=name,
            scopes=request_scopes(request),
            grants_generation=grants,
        )
        if not allowed:
            self.message = (
                f"This needs the 'predict' permission for model '{name}', which none of your "
                "roles grants (the ci role, or a grant for this model)."
            )
        return allowed


class GatewayTokenScheme(OpenApiAuthenticationExtension):
    """The gateway reads the same ``Authorization: Token <token>`` header as the rest of the API."""

    target_class = "serving.access.GatewayTokenAuthentication"
    name = "gatewayTokenAuth"  # the same header as tokenAuth; one name per authentication class

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization"}
