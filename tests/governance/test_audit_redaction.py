"""Lawful redaction: the values go, their digests stay, the chain verifies, the act is audited."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from governance import audit, audit_chain
from governance.audit import Actor, audit_redact
from governance.models import AuditEvent
from platform_core.errors import Conflict, InvalidInput
from tests.governance.audit_helpers import event, set_columns, verify_command, write

pytestmark = pytest.mark.django_db

OFFICER = Actor.system("erasure-order-42")


def test_a_redaction_removes_the_values_and_the_chain_still_verifies():
    write(5)
    target = event(3)
    digest_before = target.payload_digest
    audit_redact(event=target, fields=["after", "actor"], actor=OFFICER, reason="erasure order")

    target.refresh_from_db()
    assert target.after is None and target.actor == "[redacted]" and target.redacted
    assert set(target.redactions) == {"after", "actor"}
    assert "after" not in target.salts and "actor" not in target.salts  # no guess can be tested
    assert target.payload_digest == digest_before and target.object_id == "2"
    result = audit.verify()
    assert result.valid, result.problem
    assert verify_command().code == 0


def test_a_redaction_records_its_own_event():
    write(2)
    audit_redact(event=event(1), fields=["reason"], actor=OFFICER, reason="personal data")
    record = AuditEvent.objects.order_by("-seq").first()
    assert record.action == "audit.redacted" and record.actor == "system:erasure-order-42"
    assert record.after == {"seq": 1, "fields": ["reason"]}
    assert record.reason == "personal data" and record.object_id == str(event(1).pk)


def test_the_other_fields_stay_verifiable_after_a_redaction():
    write(3)
    audit_redact(event=event(2), fields=["before"], actor=OFFICER, reason="erasure")
    set_columns(event(2).id, reason="edited after the redaction")
    assert not audit.verify().valid


def test_a_redaction_beyond_what_its_event_names_is_detected():
    """The service redacted ``reason``; someone then also removed ``after`` by hand."""
    write(3)
    audit_redact(event=event(2), fields=["reason"], actor=OFFICER, reason="erasure")
    target = event(2)
    digest = audit_chain.field_digest("after", target.after, target.salts["after"])
    salts = {k: v for k, v in target.salts.items() if k != "after"}
    set_columns(
        target.id,
        after=None,
        salts=salts,
        redactions={**target.redactions, "after": digest},
    )
    result = audit.verify()
    assert not result.valid and result.first_bad_seq == 2
    assert "after removed without a redaction event" in result.problem


def test_redacting_twice_is_harmless():
    write(2)
    audit_redact(event=event(1), fields=["after"], actor=OFFICER, reason="erasure")
    audit_redact(event=event(1), fields=["after", "reason"], actor=OFFICER, reason="more")
    assert set(event(1).redactions) == {"after", "reason"}
    assert audit.verify().valid


@pytest.mark.parametrize(
    "fields, reason, field",
    [
        ([], "x", "fields"),
        (["seq"], "x", "fields"),
        (["hash"], "x", "fields"),
        (["after"], " ", "reason"),
    ],
)
def test_bad_redaction_requests_name_the_field(fields, reason, field):
    write(1)
    with pytest.raises(InvalidInput) as refused:
        audit_redact(event=event(1), fields=fields, actor=OFFICER, reason=reason)
    assert list(refused.value.errors) == [field]


def test_a_redaction_events_own_record_cannot_be_redacted():
    write(1)
    audit_redact(event=event(1), fields=["after"], actor=OFFICER, reason="erasure")
    with pytest.raises(InvalidInput, match="redaction event"):
        audit_redact(event=event(2), fields=["after"], actor=OFFICER, reason="cover it up")


def test_a_tampered_event_is_not_redacted():
    """Redacting an edited field would turn the edit into a lawful-looking redaction."""
    write(2)
    set_columns(event(1).id, after={"i": 99})
    with pytest.raises(Conflict, match="seq 1 does not match its digest"):
        audit_redact(event=event(1), fields=["after"], actor=OFFICER, reason="erasure")
    assert not event(1).redacted


@pytest.mark.postgres
def test_postgres_lets_a_redaction_change_only_the_redactable_fields():
    write(1)
    target = event(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('governance.audit_redaction', 'on', true)")
        AuditEvent.objects.filter(pk=target.pk).update(hash="f" * 64, after=None)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=target.pk).update(after=None)  # not through the service
    event_after = event(1)
    assert event_after.after == target.after and event_after.hash == target.hash


def test_the_command_redacts_as_a_named_person(django_user_model):
    from io import StringIO

    from django.core.management import CommandError, call_command

    django_user_model.objects.create(username="dpo")
    write(2)
    out = StringIO()
    call_command(
        "audit_redact", "1", "--field", "after", "--reason", "order 7", "--user", "dpo", stdout=out
    )
    assert out.getvalue().strip() == "Redacted after of seq 1."
    assert AuditEvent.objects.order_by("-seq").first().actor.startswith("dpo")
    with pytest.raises(CommandError, match="no audit event with seq 99"):
        call_command("audit_redact", "99", "--field", "after", "--reason", "x", "--user", "dpo")
