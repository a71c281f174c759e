"""How pages (the console, the admin) put facts and audit events into words: numbers
rounded, dicts as rows.

People read these pages, not machines: a JSON dump of a gate report or an audit payload hides
what changed. Everything here is pure (no queries), so pages stay at a fixed query count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .models import AuditEvent

MISSING = "—"


def fmt(value: Any) -> str:
    """A value as a person reads it: floats to 4 significant digits, lists joined, no JSON."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value) or MISSING
    if isinstance(value, dict):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items()) or MISSING
    return str(value)


def flatten(data: Any, prefix: str = "", depth: int = 3) -> list[tuple[str, str]]:
    """A dict as (key, value) rows; nested dicts become dotted keys up to ``depth`` levels."""
    if not isinstance(data, dict):
        return [] if data in (None, "", [], {}) else [(prefix or "value", fmt(data))]
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and depth > 1:
            rows += flatten(value, name, depth - 1)
        else:
            rows.append((name, fmt(value)))
    return rows


@dataclass(frozen=True)
class Diff:
    """One compared fact: the key, this version's value, the other's, and how they differ."""

    key: str
    this: str
    other: str

    @property
    def change(self) -> str:
        if self.this == self.other:
            return ""
        if self.other == MISSING:
            return "only here"
        if self.this == MISSING:
            return "only there"
        return "changed"


def compare(this: dict | None, other: dict | None) -> list[Diff]:
    """Rows of two dicts side by side, keys in first-seen order."""
    left, right = dict(flatten(this or {})), dict(flatten(other or {}))
    keys = list(dict.fromkeys([*left, *right]))
    return [Diff(k, left.get(k, MISSING), right.get(k, MISSING)) for k in keys]


def _words(action: str) -> str:
    return action.replace(".", " ").replace("_", " ")


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def describe(event: AuditEvent) -> str:
    """One sentence saying who did what to which object (the reason is shown apart)."""
    who, what = event.actor, event.object_repr or event.object_id
    after, before = event.after, event.before
    action = event.action
    if action.startswith("lifecycle.") and _get(after, "stage"):
        transition = action.split(".", 1)[1]
        version = _get(after, "version") or what
        start = _get(before, "stage")
        moved = f"from {start} to {after['stage']}" if start else f"to {after['stage']}"
        return f"{who} moved version {version} {moved} ({_words(transition)})"
    if action in {"approval.approved", "approval.rejected"}:
        verb = "approved" if action.endswith("approved") else "rejected"
        return (
            f"{who} {verb} {_words(str(_get(after, 'transition') or 'a transition'))} of "
            f"version {_get(after, 'version') or what} as {_get(after, 'role') or 'someone'}"
        )
    if action == "evaluation.recorded":
        outcome = "passed" if _get(after, "passed") else "failed"
        kind = _words(str(_get(after, "kind") or "evidence"))
        return f"{who} recorded {kind} evidence for version {_get(after, 'version')}: {outcome}"
    if action == "approvals.voided":
        return f"{who} voided {_get(after, 'voided') or 'the'} standing approval(s) of {what}"
    if action == "version.registered":
        return f"{who} registered {what}"
    if action == "lifecycle.escalated":
        return f"{who} escalated {what}: over its stage time limit"
    return f"{who}: {_words(action)} — {what}"


def details(event: AuditEvent) -> list[tuple[str, str, str]]:
    """(field, before, after) rows of an event's payload, for a small table."""
    return [(d.key, d.other, d.this) for d in compare(event.after, event.before)]


def as_json(value: Any) -> str:
    """Compact JSON for a CSV cell (machines read the export)."""
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)
