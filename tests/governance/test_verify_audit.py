"""``manage.py verify_audit``: a long chain verifies; each kind of tampering is named."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from governance import audit
from governance.audit import Actor
from governance.management.commands.verify_audit import Command
from governance.models import AuditEvent
from tests.governance.test_audit import _tamper

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


@dataclass
class Run:
    code: int
    out: str
    err: str


def _write(n: int) -> None:
    with transaction.atomic():
        for i in range(n):
            audit.record(actor=ACTOR, action="test.event", object_id=str(i), after={"i": i})


def _verify(*args: str) -> Run:
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except CommandError as exc:
        return Run(exc.returncode, out.getvalue(), err.getvalue())
    return Run(0, out.getvalue(), err.getvalue())


def _event(seq: int) -> AuditEvent:
    return AuditEvent.objects.get(seq=seq)


def _forge(*, seq: int, prev_hash: str) -> AuditEvent:
    """An event an attacker computed correctly: its digest and chain hash are plausible."""
    event = AuditEvent(
        seq=seq,
        created_at=timezone.now(),
        actor="ml-lead-user",
        action="approval.approved",
        object_type="governance.Approval",
        object_id="999",
        object_repr="forged approval",
        model_name="hotspot",
        after={"role": "ethics_officer"},
        prev_hash=prev_hash,
    )
    event.payload_digest = hashlib.sha256(audit.canonical_payload(event)).hexdigest()
    event.hash = audit.chain_hash(prev_hash, seq, event.payload_digest)
    event.save(force_insert=True)  # INSERT is all the database trigger lets through
    return event


def test_chain_of_two_thousand_events_verifies():
    _write(2000)
    run = _verify()
    assert run.code == 0
    assert run.out.splitlines()[0] == "OK: 2000 events, chain intact"
    assert f"head: seq 2000 hash {_event(2000).hash}" in run.out


def test_quiet_prints_nothing_when_the_chain_is_intact():
    _write(3)
    assert _verify("--quiet") == Run(0, "", "")


def test_an_empty_log_is_intact():
    assert _verify().out.startswith("OK: 0 events, chain intact")


def test_edited_row_is_named_and_exits_1():
    _write(10)
    target = _event(4)
    _tamper("UPDATE governance_auditevent SET after = %s WHERE id = %s", ['{"i": 40}', target.id])
    run = _verify()
    assert run.code == 1
    assert f"first broken link at event id {target.id} (seq 4, test.event)" in run.err
    assert "edited" in run.err


def test_edited_chain_hash_is_detected_even_with_a_consistent_digest():
    """The attacker rewrites payload and digest together: the chain hash still gives it away."""
    _write(5)
    target = _event(3)
    target.reason = "rewritten"
    digest = hashlib.sha256(audit.canonical_payload(target)).hexdigest()
    _tamper(
        "UPDATE governance_auditevent SET reason = %s, payload_digest = %s WHERE id = %s",
        ["rewritten", digest, target.id],
    )
    run = _verify()
    assert run.code == 1 and f"event id {target.id} (seq 3" in run.err
    assert "chain hash does not match" in run.err


def test_deleted_row_names_the_event_after_the_gap():
    _write(10)
    gone, after = _event(5), _event(6)
    _tamper("DELETE FROM governance_auditevent WHERE id = %s", [gone.id])
    run = _verify()
    assert run.code == 1
    assert f"first broken link at event id {after.id} (seq 6, test.event)" in run.err
    assert "expected seq 5" in run.err


def test_deleted_last_row_is_caught_by_the_chain_head():
    _write(10)
    _tamper("DELETE FROM governance_auditevent WHERE seq = 10")
    run = _verify()
    assert run.code == 1
    assert f"event id {_event(9).id} (seq 9" in run.err
    assert "head records seq 10" in run.err


def test_inserted_row_with_a_plausible_hash_breaks_the_next_link():
    """A forged event slotted in after seq 5, the later rows renumbered to make room."""
    _write(10)
    displaced = _event(6)
    _tamper("UPDATE governance_auditevent SET seq = -(seq + 1) WHERE seq >= 6")
    _tamper("UPDATE governance_auditevent SET seq = -seq WHERE seq < 0")
    forged = _forge(seq=6, prev_hash=_event(5).hash)
    run = _verify()
    assert run.code == 1
    assert f"first broken link at event id {displaced.id} (seq 7, test.event)" in run.err
    assert "prev_hash does not match" in run.err
    assert f"event id {forged.id} (" not in run.err  # it looks genuine; its successor does not


def test_appended_forged_row_is_caught_by_the_chain_head():
    _write(10)
    forged = _forge(seq=11, prev_hash=_event(10).hash)
    run = _verify()
    assert run.code == 1
    assert f"first broken link at event id {forged.id} (seq 11, approval.approved)" in run.err


def test_two_swapped_rows_name_the_one_now_out_of_place():
    _write(10)
    a, b = _event(4), _event(5)
    _tamper("UPDATE governance_auditevent SET seq = -1 WHERE id = %s", [a.id])
    _tamper("UPDATE governance_auditevent SET seq = 4 WHERE id = %s", [b.id])
    _tamper("UPDATE governance_auditevent SET seq = 5 WHERE id = %s", [a.id])
    run = _verify()
    assert run.code == 1
    assert f"first broken link at event id {b.id} (seq 4, test.event)" in run.err


def test_a_broken_chain_exits_1_from_the_command_line(monkeypatch):
    """Through ``run_from_argv`` as ``manage.py`` runs it: the process exit status is 1."""
    _write(3)
    _tamper("UPDATE governance_auditevent SET reason = 'x' WHERE seq = 2")
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        Command(stdout=StringIO(), stderr=err).run_from_argv(
            ["manage.py", "verify_audit", "--skip-checks"]
        )
    assert exited.value.code == 1
    assert f"event id {_event(2).id} (seq 2" in err.getvalue()


def test_events_appended_while_the_chain_is_walked_are_not_tampering(monkeypatch):
    """A live system keeps writing during a verification: new appends must not break it."""
    _write(5)
    appended = []

    def append_during_walk(qs_iterator):
        def walk(*args, **kwargs):
            for i, event in enumerate(qs_iterator(*args, **kwargs)):
                if i == 2 and not appended:
                    _write(3)  # commits its events and the head, as a concurrent writer does
                    appended.append(True)
                yield event

        return walk

    from django.db.models.query import QuerySet

    original = QuerySet.iterator
    monkeypatch.setattr(
        QuerySet,
        "iterator",
        lambda self, *a, **k: append_during_walk(original.__get__(self))(*a, **k),
    )

    result = audit.verify()

    assert appended and result.valid, result.problem
    assert result.events == 5  # the walk covered the chain as it stood when it began
