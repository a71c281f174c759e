"""``manage.py verify_audit``: a long chain verifies; each tampering is named by its first bad seq.

The tampering is done as a database owner would (raw SQL, the PostgreSQL trigger disabled); the
attacker does not hold the audit key. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.utils import timezone

from governance import audit, audit_chain, audit_checkpoints
from governance.management.commands.verify_audit import Command
from governance.models import AuditChainHead, AuditEvent
from tests.governance.audit_helpers import (
    Run,
    event,
    forge,
    move_head,
    rehash_from,
    set_columns,
    tamper,
    verify_command,
    write,
)

pytestmark = pytest.mark.django_db


def _broken_at(seq: int, *phrases: str) -> Run:
    run = verify_command()
    assert run.code == 1, run
    assert re.search(rf"^BROKEN at seq {seq}[ :]", run.err, re.M), run.err
    for phrase in phrases:
        assert phrase in run.err, run.err
    return run


def _checkpoint() -> audit_checkpoints.Checkpoint:
    return audit.checkpoint().checkpoint


# --- intact -----------------------------------------------------------------------------------


def test_chain_of_two_thousand_events_verifies_and_is_checkpointed():
    write(2000)
    run = verify_command()
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "OK: 2000 events, chain intact"
    assert lines[1] == f"head: seq 2000 link {event(2000).hash}"
    assert lines[2].startswith("checkpoint written: 000000002000-")
    newest = audit_checkpoints.latest(key=audit_chain.current_key()).latest
    assert (newest.seq, newest.link) == (2000, event(2000).hash)


def test_a_second_verification_holds_the_chain_against_the_first_ones_checkpoint():
    write(5)
    first = verify_command()
    write(2)
    second = verify_command()
    assert second.code == 0
    assert "matches checkpoint 000000000005-" in second.out
    assert "previous verification: " in second.out and ", intact" in second.out
    assert first.out.splitlines()[2].removeprefix("checkpoint written: ") in second.out


def test_quiet_prints_nothing_when_the_chain_is_intact():
    write(3)
    assert verify_command("--quiet") == Run(0, "", "")


def test_an_empty_log_is_intact():
    assert verify_command().out.startswith("OK: 0 events, chain intact")


def test_no_checkpoint_only_verifies():
    write(3)
    assert verify_command("--no-checkpoint").code == 0
    assert audit_checkpoints.latest(key=audit_chain.current_key()).latest is None


# --- each tampering ---------------------------------------------------------------------------


def test_edited_payload_is_named_and_exits_1():
    write(10)
    set_columns(event(4).id, after={"i": 40})
    run = _broken_at(4, "payload does not match its digest (edited)")
    assert f"event id {event(4).id}" in run.err


def test_rewritten_digest_is_caught_by_the_keyed_link():
    """The attacker rewrites payload and digest together: without the key the link gives it away."""
    write(5)
    target = event(3)
    target.reason = "rewritten"
    row = {name: getattr(target, name) for name in audit._ROW}
    set_columns(target.id, reason="rewritten", payload_digest=audit_chain.content_digest(row))
    _broken_at(3, "does not verify with the audit key")


@pytest.mark.parametrize("start", [1, 4, 10])
def test_rehashing_the_chain_from_any_row_and_moving_the_head_is_detected(start):
    write(10)
    rehash_from(start, reason="history rewritten")
    assert AuditChainHead.objects.get().hash == event(10).hash  # the head agrees with the rows
    _broken_at(start, "does not verify with the audit key")


def test_rehashing_with_the_old_unkeyed_sha256_chain_is_detected():
    """The issue's attack: recompute plain SHA-256 links as the old chain had them."""
    import hashlib

    write(6)
    prev = event(2).hash
    for seq in range(3, 7):
        row = event(seq)
        link = hashlib.sha256(f"{prev}:{seq}:{row.payload_digest}".encode()).hexdigest()
        set_columns(row.id, prev_hash=prev, hash=link)
        prev = link
    move_head(6)
    _broken_at(3, "does not verify with the audit key")


def test_flipping_redacted_on_an_edited_row_no_longer_hides_the_edit():
    """The issue's attack: an edited row marked redacted was skipped by the old verifier."""
    write(5)
    set_columns(event(2).id, reason="rewritten", redacted=True)
    _broken_at(2, "payload does not match its digest (edited)")


def test_flipping_redacted_alone_is_detected():
    write(5)
    set_columns(event(3).id, redacted=True)
    _broken_at(3, "redacted flag was set without a redaction")


def test_a_redaction_made_by_hand_is_detected():
    """Value and salt removed, the true digest kept: verifiable, but no redaction event says so."""
    write(5)
    target = event(2)
    digest = audit_chain.field_digest("after", target.after, target.salts["after"])
    salts = {k: v for k, v in target.salts.items() if k != "after"}
    set_columns(target.id, after=None, salts=salts, redactions={"after": digest}, redacted=True)
    _broken_at(2, "after removed without a redaction event")


def test_deleted_middle_row_names_the_event_after_the_gap():
    write(10)
    after = event(6)
    tamper("DELETE FROM governance_auditevent WHERE seq = 5")
    run = _broken_at(5, "missing: expected seq 5, found seq 6")
    assert f"(event id {after.id}) next" in run.err


def test_deleted_last_row_is_caught_by_the_chain_head():
    write(10)
    tamper("DELETE FROM governance_auditevent WHERE seq = 10")
    _broken_at(10, "head records seq 10", "events 10..10 were deleted")


def test_moving_the_head_alone_is_detected():
    write(10)
    AuditChainHead.objects.filter(pk=1).update(hash="f" * 64)
    _broken_at(10, "the head was moved")


def test_truncating_the_tail_below_a_checkpoint_is_detected():
    write(10)
    _checkpoint()
    tamper("DELETE FROM governance_auditevent WHERE seq > 7")
    move_head(7)
    assert audit.verify().checkpoint.seq == 10
    _broken_at(8, "the chain ends at seq 7", "records seq 10: events 8..10 were deleted")


def test_truncating_then_letting_the_service_append_again_is_detected():
    """Links written by the service itself after a truncation are valid; the checkpoint is not
    fooled: the events it signed were replaced. The last checkpoint that still matches bounds
    where the replacement starts."""
    write(5)
    _checkpoint()
    write(5)
    _checkpoint()
    tamper("DELETE FROM governance_auditevent WHERE seq > 7")
    move_head(7)
    write(6, action="test.after_truncation")
    _broken_at(6, "the event at seq 10 is not the one checkpoint", "events 6..10 were replaced")


def test_a_later_break_does_not_hide_an_earlier_replacement():
    write(5)
    _checkpoint()
    tamper("DELETE FROM governance_auditevent WHERE seq > 3")
    move_head(3)
    write(6, action="test.after_truncation")
    set_columns(event(8).id, reason="edited as well")
    _broken_at(1, "the event at seq 5 is not the one checkpoint", "events 1..5 were replaced")


def test_a_row_before_the_start_of_the_chain_is_caught():
    write(3)
    forged = forge(seq=0, prev_hash=audit_chain.GENESIS)
    run = _broken_at(0, "outside the chain")
    assert f"event id {forged.id}" in run.err


def test_rows_after_the_last_checkpoint_deleted_with_the_head_moved_is_the_known_gap():
    """What no checkpoint covers yet (at most ten minutes' worth) can still be cut off unseen:
    documented, and asserted here so a change in that behaviour is noticed."""
    write(10)
    _checkpoint()
    write(3)
    tamper("DELETE FROM governance_auditevent WHERE seq > 11")
    move_head(11)
    assert verify_command().code == 0


def test_inserted_row_breaks_the_chain_where_it_was_slotted_in():
    """A forged event slotted in after seq 5, the later rows renumbered to make room."""
    write(10)
    tamper("UPDATE governance_auditevent SET seq = -(seq + 1) WHERE seq >= 6")
    tamper("UPDATE governance_auditevent SET seq = -seq WHERE seq < 0")
    forged = forge(seq=6, prev_hash=event(5).hash)
    run = _broken_at(6, "does not verify with the audit key")
    assert f"event id {forged.id}" in run.err


def test_appended_forged_row_is_caught():
    write(10)
    forged = forge(seq=11, prev_hash=event(10).hash)
    run = _broken_at(11, "outside the chain, beyond its head")
    assert f"event id {forged.id}" in run.err


def test_appended_forged_row_with_the_head_moved_is_caught_by_its_link():
    write(10)
    forged = forge(seq=11, prev_hash=event(10).hash)
    AuditChainHead.objects.filter(pk=1).update(seq=11, hash=forged.hash)
    _broken_at(11, "does not verify with the audit key")


def test_two_swapped_rows_name_the_one_now_out_of_place():
    write(10)
    a, b = event(4), event(5)
    tamper("UPDATE governance_auditevent SET seq = -1 WHERE id = %s", [a.id])
    tamper("UPDATE governance_auditevent SET seq = 4 WHERE id = %s", [b.id])
    tamper("UPDATE governance_auditevent SET seq = 5 WHERE id = %s", [a.id])
    run = _broken_at(4, "prev_hash does not match")
    assert f"event id {b.id}" in run.err


def test_a_broken_chain_writes_no_checkpoint_and_is_remembered():
    write(5)
    set_columns(event(2).id, reason="x")
    _broken_at(2)
    assert audit_checkpoints.latest(key=audit_chain.current_key()).latest is None
    run = _broken_at(2)
    assert "previous verification: " in run.err and "broken at seq 2" in run.err


def test_a_broken_chain_exits_1_from_the_command_line(monkeypatch):
    """Through ``run_from_argv`` as ``manage.py`` runs it: the process exit status is 1."""
    write(3)
    set_columns(event(2).id, reason="x")
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    err = StringIO()
    with pytest.raises(SystemExit) as exited:
        Command(stdout=StringIO(), stderr=err).run_from_argv(
            ["manage.py", "verify_audit", "--skip-checks"]
        )
    assert exited.value.code == 1
    assert "BROKEN at seq 2 (event id" in err.getvalue()


def test_a_forged_checkpoint_is_refused_and_reported():
    """Someone who can write to the store but lacks the key claims a longer chain."""
    write(5)
    store = audit_checkpoints.get_store()
    audit_checkpoints.write(
        99, "a" * 64, when=timezone.now(), key=b"x" * 48 + b"not-the-audit-key", store=store
    )
    run = verify_command()
    assert run.code == 0
    assert "WARNING: checkpoint 000000000099-" in run.err and "signed with another key" in run.err


def test_events_appended_while_the_chain_is_walked_are_not_tampering(monkeypatch):
    """A live system keeps writing during a verification: new appends must not break it."""
    write(5)
    appended = []

    def append_during_walk(qs_iterator):
        def walk(*args, **kwargs):
            for i, row in enumerate(qs_iterator(*args, **kwargs)):
                if i == 2 and not appended:
                    write(3)  # commits its events and the head, as a concurrent writer does
                    appended.append(True)
                yield row

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
    assert AuditEvent.objects.count() == 8
