"""The hash-chained audit log: written in the change's transaction, verifiable, tamper-evident."""

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction

from governance import audit
from governance.audit import Actor
from governance.models import AuditEvent, Lifecycle
from tests.factories import ModelVersionFactory
from tests.governance.audit_helpers import tamper

pytestmark = pytest.mark.django_db

ACTOR = Actor.system("tests")


def _write(n: int) -> None:
    for i in range(n):
        with transaction.atomic():
            audit.record(actor=ACTOR, action="test.event", object_id=str(i), after={"i": i})


def _tamper(sql: str, params=()) -> None:
    tamper(sql, params)


@pytest.mark.django_db(transaction=True)
def test_record_refuses_to_run_outside_a_transaction():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        audit.record(actor=ACTOR, action="x", object_id="1")


def test_chain_of_many_events_verifies():
    _write(300)
    result = audit.verify()
    assert result.valid and result.events == 300 and result.first_broken is None


def test_edited_payload_is_detected():
    _write(5)
    target = AuditEvent.objects.get(seq=3)
    _tamper("UPDATE governance_auditevent SET reason = 'rewritten' WHERE id = %s", [target.id])
    result = audit.verify()
    assert not result.valid and result.first_broken == target.id


def test_deleted_row_is_detected():
    _write(5)
    target = AuditEvent.objects.get(seq=2)
    _tamper("DELETE FROM governance_auditevent WHERE id = %s", [target.id])
    result = audit.verify()
    assert result.first_broken == AuditEvent.objects.get(seq=3).id and result.first_bad_seq == 2


def test_deleted_tail_is_detected_through_the_chain_head():
    _write(4)
    _tamper("DELETE FROM governance_auditevent WHERE seq = 4")
    assert not audit.verify().valid


def test_swapped_rows_are_detected():
    _write(4)
    a, b = AuditEvent.objects.get(seq=2), AuditEvent.objects.get(seq=3)
    _tamper("UPDATE governance_auditevent SET seq = -1 WHERE id = %s", [a.id])
    _tamper("UPDATE governance_auditevent SET seq = 2 WHERE id = %s", [b.id])
    _tamper("UPDATE governance_auditevent SET seq = 3 WHERE id = %s", [a.id])
    assert not audit.verify().valid


def test_an_event_is_filed_under_the_model_its_row_reaches():
    version = ModelVersionFactory()
    lifecycle = Lifecycle.objects.get(version=version)  # nothing loaded: the relations are read
    user = get_user_model().objects.create(username="kim")
    with transaction.atomic():
        derived = [
            audit.record(actor=ACTOR, action="x", obj=obj).model_name
            for obj in (version.model, version, lifecycle, user)
        ]
        named = audit.record(actor=ACTOR, action="x", obj=user, model_name="m-other")
    assert derived == [version.model.name] * 3 + [""]
    assert named.model_name == "m-other"


def test_secrets_never_enter_a_payload():
    with transaction.atomic():
        event = audit.record(
            actor=ACTOR,
            action="x",
            object_id="1",
            after={"token": "abc", "nested": {"password": 1}},
        )
    assert event.after == {"token": "[removed]", "nested": {"password": "[removed]"}}


@pytest.mark.postgres
def test_postgres_refuses_update_and_delete_of_audit_rows():
    from django.db.utils import DatabaseError

    _write(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.update(reason="x")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.all().delete()
