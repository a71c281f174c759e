"""The append-only audit log: a keyed hash chain, anchored by signed checkpoints outside the DB.

Each event stores a digest of its content (with one salted digest per redactable field, see
``audit_chain``) and a link: HMAC(key, previous link, seq, digest) with ``AUDIT_HMAC_KEY``, a key
that is not in the database. Editing, deleting, inserting or reordering rows breaks a link, and
nobody without the key can re-link them. What the key cannot catch (deleting the newest events
and moving the head back; a rewrite by someone who holds the key) the checkpoints catch: signed
copies of the head in an append-only store (``audit_checkpoints``), written every ten minutes by
beat, by ``manage.py audit_checkpoint`` and after every verification that passes. A lawful
redaction (``audit_redact``) removes field values and keeps their digests, so the chain still
verifies, and records its own event; a redaction that event does not account for is tampering.
Services call ``record`` as the last statement of their transaction: it locks the chain head,
which serialises writers only for the moment before commit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from platform_core.errors import Conflict, InvalidInput
from registry.models import RegisteredModel

from . import audit_chain, audit_checkpoints
from .audit_chain import GENESIS, REDACTABLE_FIELDS
from .audit_checkpoints import Checkpoint
from .models import AuditChainHead, AuditEvent, AuditVerificationState

logger = logging.getLogger(__name__)
REDACTED_ACTION = "audit.redacted"
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


_KEYS: dict[str, tuple[bytes, bytes]] = {}


def _keys() -> tuple[bytes, bytes]:
    """(key, link key), read once per configured value: ``record`` runs in every transaction."""
    configured = getattr(settings, "AUDIT_HMAC_KEY", "") or f"file:{audit_chain._key_file()}"
    if configured not in _KEYS:
        key = audit_chain.current_key()
        _KEYS[configured] = (key, audit_chain.link_key(key))
    return _KEYS[configured]


# The relations an audited row reaches its registered model by, nearest first.
_TOWARDS_MODEL = ("model", "version", "incident")


def model_name_of(obj: models.Model | None) -> str:
    """The registered model an audited row concerns: the row itself, or the model its
    ``model``, ``version`` or ``incident`` belongs to; "" for a row of none (a user, a halt).

    ``record`` files every event under it, so callers do not spell it beside ``obj``.
    """
    while obj is not None and not isinstance(obj, RegisteredModel):
        related = (getattr(obj, name, None) for name in _TOWARDS_MODEL)
        obj = next((r for r in related if isinstance(r, models.Model)), None)
    return obj.name if obj is not None else ""


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
    """Append one event; must run inside the transaction of the change it describes.

    ``model_name`` defaults to ``model_name_of(obj)``: pass it only where ``obj`` cannot say.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit.record must run inside the transaction of the change it audits")
    return audit_chain.append(
        AuditEvent,
        AuditChainHead,
        lkey=_keys()[1],
        now=timezone.now(),
        actor=actor.label[:200],
        actor_user_id=getattr(actor.user, "pk", None),
        action=action,
        object_type=object_type or (obj._meta.label if obj is not None else ""),
        object_id=object_id or (str(obj.pk) if obj is not None else ""),
        object_repr=(str(obj) if obj is not None else object_id)[:300],
        model_name=model_name or model_name_of(obj),
        before=_plain(before),
        after=_plain(after),
        reason=reason,
        request_id=actor.request_id[:100],
    )


# --- verification ----------------------------------------------------------------------------

_ROW = audit_chain.ROW_FIELDS


@dataclass(frozen=True)
class Verification:
    valid: bool
    events: int
    first_broken: int | None  # the id of the first bad event
    problem: str = ""
    first_bad_seq: int | None = None
    head_seq: int = 0
    head_link: str = GENESIS
    checkpoint: Checkpoint | None = None
    refused_checkpoints: tuple[tuple[str, str], ...] = field(default=())
    # verify_through only: the events up to its seq were verified by an earlier walk (None:
    # every event was walked by this one)
    verified_before: VerifiedPrefix | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "valid": self.valid,
            "events": self.events,
            "first_broken": self.first_broken,
            "first_bad_seq": self.first_bad_seq,
            "head": {"seq": self.head_seq, "link": self.head_link},
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
            "refused_checkpoints": [
                {"name": name, "reason": reason} for name, reason in self.refused_checkpoints
            ],
        }
        if not self.valid:
            body["problem"] = self.problem
        return body


@dataclass
class _Walk:
    """The state of one pass along the chain."""

    prev: str
    expected: int
    count: int = 0
    bad_seq: int | None = None
    bad_id: int | None = None
    problem: str = ""
    watch: dict[int, str] = field(default_factory=dict)  # seq -> link a checkpoint signed
    seen: dict[int, tuple[int, str]] = field(default_factory=dict)  # seq -> (id, link)
    redacted: dict[int, tuple[int, frozenset[str]]] = field(default_factory=dict)
    authorised: dict[int, set[str]] = field(default_factory=dict)

    def fail(self, seq: int | None, event_id: int | None, problem: str) -> None:
        self.bad_seq, self.bad_id = seq, event_id
        where = f"seq {seq} (event id {event_id})" if event_id is not None else f"seq {seq}"
        self.problem = f"{where}: {problem}"

    def result(self, head_seq: int, head_link: str, **checkpoints: Any) -> Verification:
        return Verification(
            valid=self.bad_seq is None,
            events=self.count,
            first_broken=self.bad_id,
            problem=self.problem,
            first_bad_seq=self.bad_seq,
            head_seq=head_seq,
            head_link=head_link,
            **checkpoints,
        )


def _row_problem(row: dict, walk: _Walk, lkey: bytes) -> str:
    if row["prev_hash"] != walk.prev:
        return "prev_hash does not match the previous event's link (reordered or inserted)"
    try:
        digest = audit_chain.content_digest(row)
    except audit_chain.ContentError as exc:
        return f"{exc}; run manage.py audit_rekey if this log predates the keyed chain"
    if digest != row["payload_digest"]:
        return "payload does not match its digest (edited)"
    if audit_chain.link(lkey, walk.prev, row["seq"], digest) != row["hash"]:
        return "the link does not verify with the audit key (re-hashed or edited)"
    if row["redacted"] != bool(row["redactions"]):
        return "the redacted flag was set without a redaction (set by hand)"
    return ""


def _walk(walk: _Walk, rows, lkey: bytes) -> None:
    for row in rows:
        walk.count += 1
        if row["seq"] != walk.expected:
            walk.fail(
                walk.expected,
                None,
                f"missing: expected seq {walk.expected}, found seq {row['seq']} "
                f"(event id {row['id']}) next (deleted or renumbered)",
            )
            walk.bad_id = row["id"]  # the first event whose link no longer holds
            return
        problem = _row_problem(row, walk, lkey)
        if problem:
            walk.fail(row["seq"], row["id"], problem)
            return
        seq = row["seq"]
        if seq in walk.watch:
            walk.seen[seq] = (row["id"], row["hash"])
        if row["redactions"]:
            walk.redacted[seq] = (row["id"], frozenset(row["redactions"]))
        if row["action"] == REDACTED_ACTION and isinstance(row["after"], dict):
            target = row["after"].get("seq")
            if isinstance(target, int) and target < seq:
                walk.authorised.setdefault(target, set()).update(row["after"].get("fields") or [])
        walk.prev, walk.expected = row["hash"], seq + 1


def _rows(first_seq: int, last_seq: int, batch_size: int):
    qs = AuditEvent.objects.filter(seq__gte=first_seq, seq__lte=last_seq).order_by("seq")
    return qs.values(*_ROW).iterator(chunk_size=batch_size)


def _event_id(seq: int) -> int | None:
    return AuditEvent.objects.filter(seq=seq).values_list("id", flat=True).first()


def _last_matching_checkpoint(
    newest: Checkpoint, key: bytes, *, look_back: int = 1000
) -> Checkpoint | None:
    """The newest checkpoint older than ``newest`` that the rows still match, if any among
    the ``look_back`` before it (only a broken chain gets here)."""
    for item in audit_checkpoints.checkpoints(key=key):
        if not isinstance(item, Checkpoint) or item.seq >= newest.seq:
            continue
        look_back -= 1
        if look_back < 0:
            return None
        link = AuditEvent.objects.filter(seq=item.seq).values_list("hash", flat=True).first()
        if link == item.link:
            return item
    return None


def verify(*, batch_size: int = 2000) -> Verification:
    """Walk the chain up to its head, then hold it against the latest valid checkpoint.

    Checkpoints are read before the head: one written later may be ahead of the head read here.
    The head is read before the walk: an append commits its event and the head together, so
    every event up to that head is committed, and events appended while the walk runs are not
    mistaken for tampering (a live system keeps writing). Rows beyond the head are then looked
    for in one statement, which compares them with the head as it is at that moment.
    """
    key, lkey = _keys()
    scan = audit_checkpoints.latest(key=key)
    checkpoint = scan.latest
    head = AuditChainHead.objects.filter(pk=1).first()
    head_seq = head.seq if head is not None else 0
    head_hash = head.hash if head is not None else GENESIS
    walk = _Walk(prev=GENESIS, expected=1)
    if checkpoint is not None:
        walk.watch[checkpoint.seq] = checkpoint.link
    _walk(walk, _rows(1, head_seq, batch_size), lkey)
    last_seq = walk.expected - 1
    if walk.bad_seq is None and (last_seq != head_seq or walk.prev != head_hash):
        if last_seq < head_seq:
            walk.fail(
                last_seq + 1,
                None,
                f"the chain ends at seq {last_seq} but the head records seq {head_seq} "
                f"(events {last_seq + 1}..{head_seq} were deleted)",
            )
        else:
            walk.fail(
                head_seq,
                _event_id(head_seq),
                "the chain head's link is not this event's (the head was moved)",
            )
    if checkpoint is not None and (walk.bad_seq is None or checkpoint.seq < walk.bad_seq):
        # A later break does not excuse an earlier replacement the checkpoint reveals.
        _hold_against_checkpoint(walk, checkpoint, key, last_seq)
    if walk.bad_seq is None:
        current_head = AuditChainHead.objects.filter(pk=1).values("seq")[:1]
        outside = (
            AuditEvent.objects.filter(Q(seq__gt=Coalesce(Subquery(current_head), 0)) | Q(seq__lt=1))
            .order_by("seq")
            .values("id", "seq")
            .first()
        )
        if outside is not None:
            walk.count += 1
            walk.fail(
                outside["seq"],
                outside["id"],
                "lies outside the chain, beyond its head or before its start "
                "(appended outside the audit service)",
            )
    _check_redactions(walk)
    if walk.bad_seq is None:
        remember_verified(head_seq, head_hash)
    else:
        forget_verified(from_seq=walk.bad_seq)
    return walk.result(head_seq, head_hash, checkpoint=checkpoint, refused_checkpoints=scan.refused)


def verify_through(seq: int, *, batch_size: int = 2000) -> Verification:
    """Verify the chain from its start up to ``seq`` only (digests, links, sequence).

    For a document built as of ``seq`` (the technical-documentation pack): its result depends on
    the rows up to ``seq`` alone, so it stays the same while the log grows. It does not consult
    checkpoints or the live head; ``verify`` does that for the whole chain.

    Incremental: the walk starts after the newest verified prefix at or below ``seq`` (see
    ``remember_verified``) whose event still carries the recorded link, read in the same query
    as the rest; without one it starts at seq 1. What it does not see is an event before that
    prefix edited since (its link is not recomputed by the edit, so the prefix still matches):
    ``verify`` walks every event and catches that, and then forgets the prefixes past it.
    """
    _, lkey = _keys()
    prefix = _verified_prefix(seq)
    walk = _Walk(prev=GENESIS, expected=1)
    if prefix is not None:
        rows = _rows(prefix.seq, seq, batch_size)
        first = next(rows, None)
        if first is not None and (first["seq"], first["hash"]) == (prefix.seq, prefix.link):
            walk = _Walk(prev=prefix.link, expected=prefix.seq + 1, count=prefix.seq)
            _walk(walk, rows, lkey)
        else:  # the event was changed or the database is another one: walk it all
            rows.close()
            forget_verified(from_seq=prefix.seq)
            prefix = None
    if prefix is None:
        _walk(walk, _rows(1, seq, batch_size), lkey)
    if walk.bad_seq is None and walk.expected - 1 != seq:
        walk.fail(walk.expected, None, f"the chain ends at seq {walk.expected - 1}, before {seq}")
    result = walk.result(walk.expected - 1, walk.prev, verified_before=prefix)
    if result.valid:
        remember_verified(seq, walk.prev)
    return result


# --- verified prefixes: what verify_through need not walk again ------------------------------

VERIFIED_CACHE_KEY = "governance.audit.verified-prefixes:{key_id}"
VERIFIED_KEEP = 32  # prefixes kept (the newest recorded, and always the highest)


@dataclass(frozen=True)
class VerifiedPrefix:
    """Events 1..``seq`` verified by a walk (``verify`` or ``verify_through``) that ended at the
    link ``link``, recorded at ``recorded_at`` (ISO 8601); signed with a key derived from the
    audit key, so a prefix written into the cache by anyone without the key is ignored."""

    seq: int
    link: str
    recorded_at: str


def _prefix_key() -> bytes:
    key, _ = _keys()
    return hmac.new(key, b"governance-audit:verified-prefix", hashlib.sha256).digest()


def _prefix_signature(seq: int, link: str, recorded_at: str) -> str:
    body = audit_chain.canonical({"seq": seq, "link": link, "recorded_at": recorded_at})
    return hmac.new(_prefix_key(), body, hashlib.sha256).hexdigest()


def _prefix_cache_key() -> str:
    return VERIFIED_CACHE_KEY.format(key_id=audit_chain.key_id(_keys()[0]))


def verified_prefixes() -> list[VerifiedPrefix]:
    """The recorded prefixes whose signature holds, lowest seq first."""
    found = []
    for item in cache.get(_prefix_cache_key()) or []:
        try:
            prefix = VerifiedPrefix(int(item["seq"]), str(item["link"]), str(item["at"]))
            signature = str(item["sig"])
        except (KeyError, TypeError, ValueError):
            continue
        expected = _prefix_signature(prefix.seq, prefix.link, prefix.recorded_at)
        if hmac.compare_digest(signature, expected):
            found.append(prefix)
    return sorted(found, key=lambda p: p.seq)


def _verified_prefix(seq: int) -> VerifiedPrefix | None:
    below = [p for p in verified_prefixes() if p.seq <= seq]
    return below[-1] if below else None


def _store_prefixes(prefixes: list[VerifiedPrefix]) -> None:
    items = [
        {
            "seq": p.seq,
            "link": p.link,
            "at": p.recorded_at,
            "sig": _prefix_signature(p.seq, p.link, p.recorded_at),
        }
        for p in prefixes
    ]
    cache.set(_prefix_cache_key(), items, timeout=None)


def remember_verified(seq: int, link: str) -> None:
    """Record that events 1..``seq`` verified and ended at ``link``. A cache, not a record: losing
    it costs one full walk; two writers at once may lose one of their prefixes."""
    if seq < 1:
        return
    prefixes = [p for p in verified_prefixes() if p.seq != seq]
    prefixes.append(VerifiedPrefix(seq, link, timezone.now().isoformat()))
    if len(prefixes) > VERIFIED_KEEP:
        highest = max(prefixes, key=lambda p: p.seq)
        newest = sorted(prefixes, key=lambda p: p.recorded_at)[-VERIFIED_KEEP:]
        prefixes = newest if highest in newest else [highest, *newest[1:]]
    _store_prefixes(prefixes)


def forget_verified(*, from_seq: int = 1) -> None:
    """Drop the prefixes at or after ``from_seq`` (all of them by default)."""
    kept = [p for p in verified_prefixes() if p.seq < from_seq]
    _store_prefixes(kept)


def _hold_against_checkpoint(walk: _Walk, checkpoint: Checkpoint, key: bytes, last: int) -> None:
    signed = f"checkpoint {checkpoint.name} (signed {checkpoint.created_at})"
    if walk.bad_seq is not None and checkpoint.seq >= last:
        return  # the walk stopped before reaching it
    if checkpoint.seq > last:
        walk.fail(
            last + 1,
            None,
            f"the chain ends at seq {last}, but {signed} records seq {checkpoint.seq}: "
            f"events {last + 1}..{checkpoint.seq} were deleted",
        )
        return
    if checkpoint.seq == 0 or walk.seen.get(checkpoint.seq, (0, ""))[1] == checkpoint.link:
        return
    older = _last_matching_checkpoint(checkpoint, key)
    first = older.seq + 1 if older is not None else 1
    since = f"checkpoint {older.name}" if older is not None else "the first event"
    walk.fail(
        first,
        _event_id(first),
        f"the event at seq {checkpoint.seq} is not the one {signed} vouches for: events "
        f"{first}..{checkpoint.seq} were replaced (they still matched {since})",
    )


def _check_redactions(walk: _Walk) -> None:
    """Every redacted field must be accounted for by a later ``audit.redacted`` event."""
    for seq in sorted(walk.redacted):
        if walk.bad_seq is not None and seq >= walk.bad_seq:
            return
        event_id, fields = walk.redacted[seq]
        unaccounted = fields - walk.authorised.get(seq, set())
        if unaccounted:
            walk.fail(
                seq,
                event_id,
                f"field(s) {', '.join(sorted(unaccounted))} removed without a redaction event "
                "(redacted outside audit_redact)",
            )
            return


# --- checkpoints -----------------------------------------------------------------------------


class CheckpointRefused(Exception):
    """The head is not a lawful extension of the last checkpoint: writing one would launder it."""


@dataclass(frozen=True)
class CheckpointResult:
    checkpoint: Checkpoint
    written: bool


def checkpoint(*, batch_size: int = 2000) -> CheckpointResult:
    """Sign the chain head into the checkpoint store, unless the newest checkpoint has it.

    Only the events since the newest checkpoint are walked (cheap enough for every ten minutes);
    a head behind that checkpoint, or a new event whose link does not hold, refuses the write.
    """
    key, lkey = _keys()
    store = audit_checkpoints.get_store()
    newest = audit_checkpoints.latest(key=key, store=store).latest
    head = AuditChainHead.objects.filter(pk=1).first()
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    if newest is not None and (newest.seq, newest.link) == (head_seq, head_hash):
        return CheckpointResult(newest, written=False)
    walk = _Walk(prev=GENESIS, expected=1)
    if newest is not None:
        if head_seq < newest.seq:
            raise CheckpointRefused(
                f"the chain head is at seq {head_seq}, behind checkpoint {newest.name} at seq "
                f"{newest.seq}: events were deleted"
            )
        link = AuditEvent.objects.filter(seq=newest.seq).values_list("hash", flat=True).first()
        if newest.seq and link != newest.link:
            raise CheckpointRefused(
                f"the event at seq {newest.seq} is not the one checkpoint {newest.name} vouches "
                "for; run manage.py verify_audit"
            )
        walk = _Walk(prev=newest.link, expected=newest.seq + 1)
    _walk(walk, _rows(walk.expected, head_seq, batch_size), lkey)
    if walk.bad_seq is None and (walk.expected - 1, walk.prev) != (head_seq, head_hash):
        walk.fail(head_seq, None, "the chain does not end at the head")
    if walk.bad_seq is not None:
        raise CheckpointRefused(walk.problem)
    written = audit_checkpoints.write(
        head_seq, head_hash, when=timezone.now(), key=key, store=store
    )
    return CheckpointResult(written, written=True)


@dataclass(frozen=True)
class VerificationRun:
    """What ``verify_audit`` and ``/api/v1/audit/verify/`` report: one function for both."""

    result: Verification
    verified_at: Any
    previous: dict[str, Any] | None
    checkpoint_written: Checkpoint | None
    checkpoint_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        body = self.result.to_dict()
        body["verified_at"] = self.verified_at
        body["previous_verification"] = self.previous
        if self.checkpoint_written is not None:
            body["checkpoint"] = self.checkpoint_written.to_dict()
        body["checkpoint_written"] = self.checkpoint_written is not None
        if self.checkpoint_error:
            body["checkpoint_error"] = self.checkpoint_error
        return body


def verify_and_checkpoint() -> VerificationRun:
    """Verify the chain, remember when and how that went, and checkpoint the verified head."""
    result = verify()
    state = AuditVerificationState.objects.filter(pk=1).first()
    previous = (
        {
            "at": state.ran_at,
            "valid": state.valid,
            "events": state.events,
            "first_bad_seq": state.first_bad_seq,
        }
        if state is not None
        else None
    )
    now = timezone.now()
    written, error = None, ""
    if result.valid:
        newest = result.checkpoint
        if newest is None or (newest.seq, newest.link) != (result.head_seq, result.head_link):
            key, _ = _keys()
            try:
                written = audit_checkpoints.write(
                    result.head_seq,
                    result.head_link,
                    when=now,
                    key=key,
                    store=audit_checkpoints.get_store(),
                )
            except (OSError, audit_checkpoints.CheckpointExists) as exc:
                error = f"the checkpoint could not be written: {exc}"
                logger.error("audit checkpoint after verification failed: %s", exc)
    else:
        logger.error("audit chain verification failed: %s", result.problem)
    AuditVerificationState.objects.update_or_create(
        pk=1,
        defaults={
            "ran_at": now,
            "valid": result.valid,
            "events": result.events,
            "first_bad_seq": result.first_bad_seq,
            "problem": result.problem,
        },
    )
    return VerificationRun(result, now, previous, written, error)


# --- redaction -------------------------------------------------------------------------------


def _allow_redaction(on: bool) -> None:
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('governance.audit_redaction', %s, true)", ["on" if on else "off"]
            )


def audit_redact(*, event: AuditEvent, fields: list[str], actor: Actor, reason: str) -> AuditEvent:
    """Remove the values of some fields of an event (e.g. personal data under an erasure order).

    Each field's digest stays in the row, so the event and the whole chain still verify; the
    values and their salts are gone. The redaction is itself audited, and ``verify`` refuses any
    redacted field that such an event does not name.
    """
    unknown = sorted(set(fields) - set(REDACTABLE_FIELDS))
    if not fields or unknown:
        raise InvalidInput(
            {
                "fields": f"choose from {', '.join(REDACTABLE_FIELDS)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            }
        )
    if not reason.strip():
        raise InvalidInput({"reason": "a redaction needs a reason"})
    with transaction.atomic():
        target = AuditEvent.objects.select_for_update().get(pk=event.pk)
        if target.action == REDACTED_ACTION and "after" in fields:
            raise InvalidInput({"fields": "a redaction event's own record cannot be redacted"})
        row = {name: getattr(target, name) for name in _ROW}
        try:
            intact = audit_chain.content_digest(row) == target.payload_digest
        except audit_chain.ContentError:
            intact = False
        if not intact:
            raise Conflict(
                f"event seq {target.seq} does not match its digest; run manage.py verify_audit"
            )
        salts, redactions = dict(target.salts), dict(target.redactions)
        for name in fields:
            if name in redactions:
                continue
            redactions[name] = audit_chain.field_digest(name, getattr(target, name), salts[name])
            del salts[name]
            setattr(target, name, audit_chain.REDACTED_VALUE[name])
        target.salts, target.redactions, target.redacted = salts, redactions, True
        _allow_redaction(True)
        target.save(update_fields=[*REDACTABLE_FIELDS, "salts", "redactions", "redacted"])
        _allow_redaction(False)
        record(
            actor=actor,
            action=REDACTED_ACTION,
            object_type="governance.AuditEvent",
            object_id=str(target.pk),
            model_name=target.model_name,
            after={"seq": target.seq, "fields": sorted(fields)},
            reason=reason,
        )
    return target
