"""The append-only, hash-chained audit log.

Each event stores the SHA-256 of its canonical payload and a chain hash over (previous hash, seq,
payload digest). Editing, deleting, inserting or reordering rows breaks the chain; a lawful
redaction
replaces the payload but keeps its digest, so the chain still verifies. Services call ``record`` as
the last statement of their transaction: it locks the chain head, which serialises writers only for
the moment before commit.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import AuditChainHead, AuditEvent

GENESIS = "0" * 64
_SECRET_KEYS = re.compile(r"(token|password|secret|api[_-]?key|authorization)", re.I)


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a person, a person's API token, or a system task."""

    label: str
    user: Any = None
    request_id: str = ""

    @classmethod
    def for_user(cls, user, *, token_name: str = "", request_id: str = "") -> Actor:
        label = user.get_username() + (f" (token {token_name})" if token_name else "")
        return cls(label=label, user=user, request_id=request_id)

    @classmethod
    def system(cls, task: str, *, request_id: str = "") -> Actor:
        return cls(label=f"system:{task}", request_id=request_id)


def _plain(value: Any) -> Any:
    """JSON-safe copy with secrets removed: no token or password ever enters the log."""
    data = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return _scrub(data)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: "[removed]" if _SECRET_KEYS.search(str(k)) else _scrub(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def canonical_payload(event: AuditEvent) -> bytes:
    payload = {
        "seq": event.seq,
        "created_at": event.created_at.isoformat(),
        "actor": event.actor,
        "actor_user_id": event.actor_user_id,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "model_name": event.model_name,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "request_id": event.request_id,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: str, seq: int, payload_digest: str) -> str:
    return hashlib.sha256(f"{prev_hash}:{seq}:{payload_digest}".encode()).hexdigest()


def record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    model_name: str = "",
    before: Any = None,
    after: Any = None,
    reason: str = "",
) -> AuditEvent:
    """Append one event; must run inside the transaction of the change it describes."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction of the change it audits")
    head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
    event = AuditEvent(
        seq=head.seq + 1,
        created_at=timezone.now(),
        actor=actor.label[:200],
        actor_user_id=getattr(actor.user, "pk", None),
        action=action,
        object_type=object_type or (obj._meta.label if obj is not None else ""),
        object_id=object_id or (str(obj.pk) if obj is not None else ""),
        object_repr=(str(obj) if obj is not None else object_id)[:300],
        model_name=model_name,
        before=_plain(before),
        after=_plain(after),
        reason=reason,
        request_id=actor.request_id[:100],
        prev_hash=head.hash,
    )
    event.payload_digest = hashlib.sha256(canonical_payload(event)).hexdigest()
    event.hash = chain_hash(event.prev_hash, event.seq, event.payload_digest)
    event.save(force_insert=True)
    head.seq, head.hash = event.seq, event.hash
    head.save(update_fields=["seq", "hash"])
    return event


@dataclass(frozen=True)
class Verification:
    valid: bool
    events: int
    first_broken: int | None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "events": self.events, "first_broken": self.first_broken}


def verify(*, batch_size: int = 2000) -> Verification:
    """Walk the chain up to its head; report the first event whose link does not hold.

    The head is read first: an append commits its event and the head together, so every event
    up to that head is committed, and events appended while the walk runs are not mistaken for
    tampering (a live system keeps writing). Rows beyond the head are then looked for in one
    statement, which compares them with the head as it is at that moment.
    """
    head = AuditChainHead.objects.filter(pk=1).first()
    head_seq = head.seq if head is not None else 0
    prev_hash, expected_seq, count = GENESIS, 1, 0
    events = AuditEvent.objects.filter(seq__lte=head_seq).order_by("seq")
    for event in events.iterator(chunk_size=batch_size):
        count += 1
        problem = ""
        if event.seq != expected_seq:
            problem = f"expected seq {expected_seq}, found {event.seq} (a row is missing or added)"
        elif event.prev_hash != prev_hash:
            problem = "prev_hash does not match the previous event (reordered or inserted)"
        elif not event.redacted and (
            hashlib.sha256(canonical_payload(event)).hexdigest() != event.payload_digest
        ):
            problem = "payload does not match its digest (edited)"
        elif chain_hash(event.prev_hash, event.seq, event.payload_digest) != event.hash:
            problem = "chain hash does not match (edited)"
        if problem:
            return Verification(False, count, event.id, f"event id {event.id}: {problem}")
        prev_hash, expected_seq = event.hash, expected_seq + 1
    if head is not None and (head_seq != expected_seq - 1 or head.hash != prev_hash):
        last = AuditEvent.objects.filter(seq__lte=head_seq).order_by("-seq").first()
        return Verification(
            False,
            count,
            last.id if last else None,
            f"the chain ends at seq {expected_seq - 1} but the head records seq {head_seq} "
            "(events at the end were deleted or appended outside the audit service)",
        )
    current_head = AuditChainHead.objects.filter(pk=1).values("seq")[:1]
    beyond = (
        AuditEvent.objects.filter(seq__gt=Coalesce(Subquery(current_head), 0))
        .order_by("seq")
        .first()
    )
    if beyond is not None:
        return Verification(
            False,
            count + 1,
            beyond.id,
            f"event id {beyond.id}: seq {beyond.seq} lies beyond the chain head "
            "(appended outside the audit service)",
        )
    return Verification(True, count, None)
