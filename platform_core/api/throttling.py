"""A write budget per API token: a leaked or looping CI token cannot flood the platform."""

from __future__ import annotations

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class WriteRateThrottle(SimpleRateThrottle):
    """Counts unsafe requests per token (per user for a session, per address when anonymous).

    Over the rate the answer is 429 with ``Retry-After``. The rate is read per request from
    ``DEFAULT_THROTTLE_RATES['write']`` (None disables it), so it follows the settings.
    """

    scope = "write"

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request, view) -> str:
        token = getattr(request, "auth", None)
        if getattr(token, "pk", None) is not None:  # a knox token: one budget per token
            ident = f"token:{token.pk}"
        elif request.user is not None and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"addr:{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}

    def wait(self) -> float | None:
        # DRF may answer 0 seconds at the window's edge; a client must still wait a moment.
        waited = super().wait()
        return None if waited is None else max(1.0, waited)
