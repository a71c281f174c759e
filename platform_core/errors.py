"""Domain errors shared by every app; the API maps them to 400, 403, 404 and 409."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: the message is written for the person who has to act on it."""


class InvalidInput(DomainError):
    """400: one or more named fields are wrong."""

    def __init__(self, errors: dict[str, str | list[str]]):
        self.errors = {k: v if isinstance(v, list) else [v] for k, v in errors.items()}
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in self.errors.items()))


class NotFound(DomainError):
    """404."""


class Conflict(DomainError):
    """409: the request is valid but the current state forbids it."""

    def __init__(self, message: str, *, reasons: list[str] | None = None):
        self.reasons = reasons or [message]
        super().__init__(message)


class NoStandbyVersion(Conflict):
    """409 of ``start_rollback``: no warm-standby version to restore, so nothing can switch."""


class Forbidden(DomainError):
    """403: the actor lacks the role the action needs."""


class Unavailable(DomainError):
    """503: a dependency (MLflow, the broker) cannot be reached; retry later."""
