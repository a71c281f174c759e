"""What an attacker with database rights does to the audit log, and how tests look at it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from io import StringIO

from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from governance import audit, audit_chain
from governance.audit import Actor
from governance.models import AuditChainHead, AuditEvent

ACTOR = Actor.system("tests")
ATTACKER_KEY = b"the-attacker-does-not-have-the-real-key-0123456789"


@dataclass
class Run:
    code: int
    out: str
    err: str


def write(n: int, *, action: str = "test.event") -> None:
    with transaction.atomic():
        for i in range(n):
            audit.record(actor=ACTOR, action=action, object_id=str(i), after={"i": i})


def event(seq: int) -> AuditEvent:
    return AuditEvent.objects.get(seq=seq)


def verify_command(*args: str) -> Run:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Run(exc.returncode, out.getvalue(), err.getvalue())
    return Run(0, out.getvalue(), err.getvalue())


def tamper(sql: str, params=()) -> None:
    """Raw SQL as a database owner runs it: on PostgreSQL the append-only trigger is disabled."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE governance_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE governance_auditevent ENABLE TRIGGER USER")


def set_columns(event_id: int, **values) -> None:
    columns = ", ".join(f"{name} = %s" for name in values)
    params = [json.dumps(v) if isinstance(v, dict | list) else v for v in values.values()]
    tamper(f"UPDATE governance_auditevent SET {columns} WHERE id = %s", [*params, event_id])


def move_head(seq: int) -> None:
    link = AuditEvent.objects.filter(seq=seq).values_list("hash", flat=True).first()
    AuditChainHead.objects.filter(pk=1).update(seq=seq, hash=link or audit_chain.GENESIS)


def rehash_from(seq: int, *, key: bytes = ATTACKER_KEY, **edits) -> None:
    """Edit the event at ``seq`` and re-link it and every later event, then move the head: all
    an attacker can do without the audit key (here with a key of their own)."""
    lkey = audit_chain.link_key(key)
    prev = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first()
    prev = prev or audit_chain.GENESIS
    for row in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
        if row.seq == seq:
            for name, value in edits.items():
                setattr(row, name, value)
        row.salts = {}  # seal() makes fresh ones, as a forger must for edited fields
        audit_chain.seal(row, prev_hash=prev, lkey=lkey)
        set_columns(
            row.id,
            **{name: getattr(row, name) for name in edits},
            salts=row.salts,
            payload_digest=row.payload_digest,
            prev_hash=row.prev_hash,
            hash=row.hash,
        )
        prev = row.hash
    AuditChainHead.objects.filter(pk=1).update(hash=prev)


def forge(*, seq: int, prev_hash: str, key: bytes = ATTACKER_KEY) -> AuditEvent:
    """A well-formed event sealed with a key that is not the audit key; INSERT is allowed."""
    forged = AuditEvent(
        seq=seq,
        created_at=timezone.now(),
        actor="ml-lead-user",
        action="approval.approved",
        object_type="governance.Approval",
        object_id="999",
        object_repr="forged approval",
        model_name="hotspot",
        after={"role": "ethics_officer"},
    )
    audit_chain.seal(forged, prev_hash=prev_hash, lkey=audit_chain.link_key(key))
    forged.save(force_insert=True)
    return forged


def write_legacy(n: int) -> None:
    """Events as releases before the keyed chain wrote them: unsalted, SHA-256 links."""
    prev = audit_chain.GENESIS
    for seq in range(1, n + 1):
        row = AuditEvent(
            seq=seq,
            created_at=timezone.now(),
            actor="system:legacy",
            action="legacy.event",
            object_type="",
            object_id=str(seq),
            object_repr=str(seq),
            model_name="",
            after={"i": seq},
            reason="",
            request_id="",
            salts={},
            redactions={},
            prev_hash=prev,
        )
        row.payload_digest = audit_chain.legacy_payload_digest(
            {f.attname: getattr(row, f.attname) for f in AuditEvent._meta.fields}
        )
        row.hash = hashlib.sha256(f"{prev}:{seq}:{row.payload_digest}".encode()).hexdigest()
        row.save(force_insert=True)
        prev = row.hash
    AuditChainHead.objects.update_or_create(pk=1, defaults={"seq": n, "hash": prev})
