"""The cryptography of the audit chain, apart from the ORM so data migrations can use it too.

An event's content is its fixed fields (sequence number, time, action, object, model, request)
plus one digest per *redactable* field (actor, object_repr, before, after, reason). A field digest
is SHA-256 over a random per-field salt and the field's canonical JSON: a lawful redaction removes
the value and its salt and keeps the digest, so the event still verifies, and nobody can test a
guess of the removed value against the digest. The event's ``payload_digest`` is SHA-256 of that
content, and its link (``hash``) is HMAC-SHA256(key, previous link, seq, payload_digest) with a key
that is not in the database: whoever can rewrite rows but lacks the key cannot re-link them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

GENESIS = "0" * 64
FIXED_FIELDS = (
    "seq",
    "created_at",
    "actor_user_id",
    "action",
    "object_type",
    "object_id",
    "model_name",
    "request_id",
)
REDACTABLE_FIELDS = ("actor", "object_repr", "before", "after", "reason")
# What a redacted field holds instead of its value.
REDACTED_VALUE: dict[str, Any] = {
    "actor": "[redacted]",
    "object_repr": "[redacted]",
    "before": None,
    "after": None,
    "reason": "[redacted]",
}
CONTENT_VERSION = 2
MIN_KEY_LENGTH = 32


def _key_file() -> Path:
    return Path(getattr(settings, "AUDIT_HMAC_KEY_FILE", Path(settings.VAR_DIR) / "audit_hmac_key"))


def _key_from_file(path: Path) -> str:
    """The embedded default: a key made on first use, readable by this user only, never in git."""
    if not path.exists():
        # Written aside and linked into place: a process racing this one never reads half a key,
        # and the first to link wins.
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process linked first
                os.link(temp, path)
        finally:
            temp.unlink(missing_ok=True)
    return path.read_text().strip()


def current_key() -> bytes:
    """``AUDIT_HMAC_KEY`` or, when unset, the per-checkout key file under ``var/``."""
    key = getattr(settings, "AUDIT_HMAC_KEY", "") or _key_from_file(_key_file())
    if len(key) < MIN_KEY_LENGTH:
        raise ImproperlyConfigured(
            f"AUDIT_HMAC_KEY must be at least {MIN_KEY_LENGTH} characters of random text"
        )
    return key.encode()


def _derive(key: bytes, purpose: str) -> bytes:
    # One key, separate uses: a chain link can never pass for a checkpoint signature.
    return hmac.new(key, f"governance-audit:{purpose}".encode(), hashlib.sha256).digest()


def link_key(key: bytes) -> bytes:
    return _derive(key, "link")


def signing_key(key: bytes) -> bytes:
    return _derive(key, "checkpoint")


def key_id(key: bytes) -> str:
    """A public name of the key (which key signed what), from which the key cannot be learnt."""
    return _derive(key, "key-id").hex()[:16]


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_encode_str = json.encoder.encode_basestring  # what the encoder does for a str, without it


def canonical(value: Any) -> bytes:
    # verify() runs this five times per event: skip building an encoder per call.
    if isinstance(value, str):
        return _encode_str(value).encode()
    return _ENCODER.encode(value).encode()


def new_salts() -> dict[str, str]:
    return {name: secrets.token_hex(16) for name in REDACTABLE_FIELDS}


def field_digest(name: str, value: Any, salt: str) -> str:
    return hashlib.sha256(
        bytes.fromhex(salt) + b"\0" + name.encode() + b"\0" + canonical(value)
    ).hexdigest()


class ContentError(ValueError):
    """The stored row cannot even be read as chain content (a salt or digest is missing)."""


def _iso(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()


def content_digest(row: Mapping[str, Any]) -> str:
    """SHA-256 of the event's canonical content; ``row`` maps field names to stored values."""
    salts = row.get("salts") or {}
    redactions = row.get("redactions") or {}
    fields = {}
    for name in REDACTABLE_FIELDS:
        if name in redactions:
            if name in salts:
                raise ContentError(f"field '{name}' is marked redacted but keeps its salt")
            fields[name] = redactions[name]
        elif name in salts:
            fields[name] = field_digest(name, row[name], salts[name])
        else:
            raise ContentError(
                f"field '{name}' has no salt (written before the keyed chain, or edited)"
            )
    content = {name: row[name] for name in FIXED_FIELDS}
    content["created_at"] = _iso(row["created_at"])
    content["v"] = CONTENT_VERSION
    content["fields"] = fields
    return hashlib.sha256(canonical(content)).hexdigest()


def link(lkey: bytes, prev_hash: str, seq: int, payload_digest: str) -> str:
    return hmac.digest(lkey, f"{prev_hash}:{seq}:{payload_digest}".encode(), "sha256").hex()


def seal(event: Any, *, prev_hash: str, lkey: bytes) -> None:
    """Give an unsaved event (or historical model instance) its salts, digest and link."""
    if not getattr(event, "salts", None):
        event.salts = new_salts()
    event.redactions = getattr(event, "redactions", None) or {}
    row = {name: getattr(event, name) for name in (*FIXED_FIELDS, *REDACTABLE_FIELDS)}
    row["salts"], row["redactions"] = event.salts, event.redactions
    event.prev_hash = prev_hash
    event.payload_digest = content_digest(row)
    event.hash = link(lkey, prev_hash, event.seq, event.payload_digest)


# --- the digest of events written before the keyed chain (for the upgrade only) -------------


def legacy_payload_digest(row: Mapping[str, Any]) -> str:
    payload = {
        name: row[name]
        for name in (
            "seq",
            "actor",
            "actor_user_id",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "model_name",
            "before",
            "after",
            "reason",
            "request_id",
        )
    }
    payload["created_at"] = _iso(row["created_at"])
    return hashlib.sha256(canonical(payload)).hexdigest()


def legacy_chain_hash(prev_hash: str, seq: int, payload_digest: str) -> str:
    return hashlib.sha256(f"{prev_hash}:{seq}:{payload_digest}".encode()).hexdigest()


# --- appending and re-linking, on any model class (the app's or a migration's) ---------------


def append(event_model: Any, head_model: Any, *, lkey: bytes, now: Any, **fields: Any) -> Any:
    """Lock the chain head, add one sealed event after it and move the head; in a transaction."""
    head, _ = head_model.objects.select_for_update().get_or_create(pk=1)
    event = event_model(seq=head.seq + 1, created_at=now, **fields)
    seal(event, prev_hash=head.hash, lkey=lkey)
    event.save(force_insert=True)
    head.seq, head.hash = event.seq, event.hash
    head.save(update_fields=["seq", "hash"])
    return event


# The columns a verification reads of each event (``audit.verify`` and the checkpointed walk).
ROW_FIELDS = (
    "id",
    *FIXED_FIELDS,
    *REDACTABLE_FIELDS,
    "salts",
    "redactions",
    "redacted",
    "payload_digest",
    "prev_hash",
    "hash",
)


class RelinkRefused(Exception):
    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"seq {seq}: {problem}")
        self.seq, self.problem = seq, problem


def _old_problem(row: dict, prev_hash: str, expected_seq: int, old_lkey: bytes) -> str:
    """Why the row does not verify under the scheme it was written with ('' when it does)."""
    if row["seq"] != expected_seq:
        return f"expected seq {expected_seq}, found {row['seq']} (a row is missing or added)"
    if row["prev_hash"] != prev_hash:
        return "prev_hash does not match the previous event"
    if not row["salts"] and not row["redactions"]:  # written before the keyed chain
        if row["redacted"]:
            return "marked redacted, but nothing ever redacted an event before the keyed chain"
        if legacy_payload_digest(row) != row["payload_digest"]:
            return "payload does not match its digest (edited)"
        if legacy_chain_hash(prev_hash, row["seq"], row["payload_digest"]) != row["hash"]:
            return "chain hash does not match (edited)"
        return ""
    try:
        digest = content_digest(row)
    except ContentError as exc:
        return str(exc)
    if digest != row["payload_digest"]:
        return "payload does not match its digest (edited)"
    if link(old_lkey, prev_hash, row["seq"], digest) != row["hash"]:
        return "link does not verify with the old key"
    return ""


def relink(
    event_model: Any,
    head_model: Any,
    *,
    new_key: bytes,
    old_key: bytes | None = None,
    accept_broken: bool = False,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Re-link the whole chain under ``new_key``; run inside a transaction.

    Each row is first checked under the scheme it was written with (the unkeyed SHA-256 chain of
    earlier releases, or the keyed chain under ``old_key``): re-linking a rewritten log would
    launder the rewrite, so the first row that does not verify stops it unless ``accept_broken``
    (the report then names it, and the caller audits that). Field values are never changed.
    """
    head, _ = head_model.objects.select_for_update().get_or_create(pk=1)
    lkey = link_key(new_key)
    old_lkey = link_key(old_key if old_key is not None else new_key)
    report: dict[str, Any] = {"events": 0, "legacy": 0, "changed": 0, "first_broken": None}
    old_prev, new_prev, expected, last_seq = GENESIS, GENESIS, 1, 0
    while True:
        rows = list(
            event_model.objects.filter(seq__gt=last_seq)
            .order_by("seq")
            .values(*ROW_FIELDS)[:batch_size]
        )
        if not rows:
            break
        changed = []
        for row in rows:
            problem = _old_problem(row, old_prev, expected, old_lkey)
            if problem and report["first_broken"] is None:
                if not accept_broken:
                    raise RelinkRefused(row["seq"], problem)
                report["first_broken"] = {"seq": row["seq"], "problem": problem}
            legacy = not row["salts"] and not row["redactions"]
            report["events"] += 1
            report["legacy"] += legacy
            old_prev, expected, last_seq = row["hash"], row["seq"] + 1, row["seq"]
            event = event_model(**{k: v for k, v in row.items()})
            event.salts = new_salts() if legacy else row["salts"]
            event.redacted = bool(row["redactions"])
            seal(event, prev_hash=new_prev, lkey=lkey)
            new_prev = event.hash
            if (event.payload_digest, event.hash, event.prev_hash, event.salts) != (
                row["payload_digest"],
                row["hash"],
                row["prev_hash"],
                row["salts"],
            ) or event.redacted != row["redacted"]:
                changed.append(event)
        event_model.objects.bulk_update(
            changed, ["salts", "redacted", "payload_digest", "prev_hash", "hash"], batch_size=500
        )
        report["changed"] += len(changed)
    head.seq, head.hash = last_seq, new_prev
    head.save(update_fields=["seq", "hash"])
    return report


def allow_maintenance(connection: Any) -> None:
    """On PostgreSQL, let this transaction rewrite audit links (the trigger refuses otherwise)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('governance.audit_maintenance', 'on', true)")
