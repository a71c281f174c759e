"""The small interface every channel implements, and the HTTP helper they share."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass


class DeliveryError(Exception):
    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class TemporaryFailure(DeliveryError):
    """Network error, 429 or 5xx: try again later."""


class PermanentFailure(DeliveryError):
    """Any other refusal (4xx, no recipient, no configuration): retrying cannot help."""


@dataclass(frozen=True)
class Delivered:
    status_code: int | None = None
    detail: str = ""


class Channel:
    name = ""

    def send(self, notification) -> Delivered:  # pragma: no cover - interface
        raise NotImplementedError


def post_json(url: str, payload: dict, *, headers: dict | None = None, timeout: float = 10.0):
    """POST ``payload``; Delivered on 2xx, TemporaryFailure or PermanentFailure otherwise."""
    if not url:
        raise PermanentFailure("no URL is configured for this channel")
    body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Delivered(status_code=response.status)
    except urllib.error.HTTPError as exc:
        code = exc.code
        message = f"HTTP {code} from {url}"
        if code == 429 or code >= 500:
            raise TemporaryFailure(message, status_code=code) from None
        raise PermanentFailure(message, status_code=code) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TemporaryFailure(f"network error: {exc}") from None
