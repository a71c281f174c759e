"""The audit page and its CSV export: the audit API's permission and per-model scoping, filters,
pagination, formula cells escaped, the chain's last verification, and a fixed query count."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse

from governance import audit, services
from governance.audit import Actor
from governance.management.commands.verify_audit import Command as VerifyCommand
from governance.tasks import verify_audit
from tests.governance.lifecycle_helpers import SYSTEM, person

pytestmark = pytest.mark.django_db
PAGE = reverse("console:audit")
EXPORT = reverse("console:audit-export")


def login(client, username):
    client.force_login(get_user_model().objects.get(username=username))


def record(action="test.event", *, model="m1", actor=SYSTEM, reason="", after=None, object_id=""):
    with transaction.atomic():
        return audit.record(
            actor=actor,
            action=action,
            object_type="tests.Thing",
            object_id=object_id or action,
            model_name=model,
            after=after if after is not None else {"n": 1},
            reason=reason,
        )


def exported(client, **params) -> list[list[str]]:
    response = client.get(EXPORT, params)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(text)))


def test_newest_first_in_words_with_details_table(client):
    record("first.event", after={"stage": "staging"})
    record("second.event", reason="because", after={"score": 0.123456})
    person("auditor", "ada")
    login(client, "ada")

    page = client.get(PAGE).content.decode()

    assert page.index("second event") < page.index("first event")
    assert '<th scope="row">score</th><td>0.1235</td>' in page  # no before: one column
    assert "“because”" in page


def test_filters_by_model_actor_action_and_date_range(client):
    with time_machine.travel(datetime(2026, 3, 1, 12, tzinfo=UTC), tick=False):
        record("old.event", model="m1", object_id="old-one")
    with time_machine.travel(datetime(2026, 3, 5, 12, tzinfo=UTC), tick=False):
        record("new.event", model="m2", object_id="new-one")
        person("ml_lead", "lee")
        record(
            "by.lee",
            model="m2",
            actor=Actor.for_user(get_user_model().objects.get(username="lee"), token_name="ci"),
            object_id="lees-one",
        )
    person("auditor", "ada")
    login(client, "ada")

    def ids(**params) -> set[str]:
        text = client.get(PAGE, params).content.decode()
        return {i for i in ("old-one", "new-one", "lees-one") if i in text}

    assert ids(model="m1") == {"old-one"}
    assert ids(action="new.event") == {"new-one"}
    assert ids(actor="lee") == {"lees-one"}  # a username also matches that user's tokens
    assert ids(since="2026-03-01", until="2026-03-01") == {"old-one"}  # "to" is inclusive
    assert ids(since="2026-03-02") == {"new-one", "lees-one"}
    page = client.get(PAGE, {"since": "yesterday"})
    assert page.status_code == 400 and "Since:" in page.content.decode()
    assert '<label for="f-since">From</label>' in page.content.decode()


def test_pagination_fifty_a_page_newest_first(client):
    with transaction.atomic():
        for i in range(120):
            audit.record(actor=SYSTEM, action="bulk.event", object_id=f"obj-{i:03d}", after={})
    person("auditor", "ada")
    login(client, "ada")

    first = client.get(PAGE, {"action": "bulk.event"}).content.decode()
    third = client.get(PAGE, {"action": "bulk.event", "page": 3}).content.decode()

    assert "obj-119" in first and "obj-070" in first and "obj-069" not in first
    assert "Page 3 of 3" in third and "obj-019" in third and "obj-020" not in third
    assert "action=bulk.event&amp;page=2" in third  # the pager keeps the filters


def test_csv_export_streams_the_same_filters_with_formula_cells_escaped(client):
    record("evil.event", model="m1", reason='=HYPERLINK("http://x")', after={"a": 1})
    record("plain.event", model="m1", reason="+1 @home -x")
    record("other.event", model="m2")
    person("auditor", "ada")
    login(client, "ada")

    rows = exported(client, model="m1")

    assert rows[0][:4] == ["seq", "created_at", "actor", "action"]
    assert [r[3] for r in rows[1:]] == ["plain.event", "evil.event"]  # newest first, m1 only
    reasons = {r[3]: r[8] for r in rows[1:]}
    assert reasons["evil.event"] == '\'=HYPERLINK("http://x")'
    assert reasons["plain.event"] == "'+1 @home -x"
    assert {r[10] for r in rows[1:]} >= {'{"a": 1}'}


def test_per_model_audit_grant_sees_only_its_models_and_others_are_refused(client):
    record("m1.event", model="m1", object_id="in-m1")
    record("m2.event", model="m2", object_id="in-m2")
    from tests.factories import RegisteredModelFactory

    RegisteredModelFactory(name="m1")
    services.role_grant(username="scoped", roles=["ml_lead"], model_name="m1", actor=SYSTEM)
    services.role_grant(username="reader", roles=["ml_engineer"], actor=SYSTEM)
    login(client, "scoped")

    page = client.get(PAGE).content.decode()
    rows = exported(client)
    forced = client.get(PAGE, {"model": "m2"}).content.decode()

    assert "in-m1" in page and "in-m2" not in page and "in-m2" not in forced
    assert "m1.event" in [r[3] for r in rows[1:]] and {r[4] for r in rows[1:]} == {"m1"}
    assert "verified as a whole" in page  # the global chain result is not theirs to see
    login(client, "reader")  # read but no read_audit: refused, as by the API
    assert client.get(PAGE).status_code == 403
    assert client.get(EXPORT).status_code == 403


def test_last_verification_is_shown_and_recorded_by_command_and_beat_task(client):
    person("auditor", "ada")
    login(client, "ada")
    assert "Never verified" in client.get(PAGE).content.decode()

    VerifyCommand(stdout=io.StringIO(), stderr=io.StringIO()).handle(
        quiet=True, no_checkpoint=False
    )
    after_command = client.get(PAGE).content.decode()
    with time_machine.travel(datetime(2031, 1, 1, 3, tzinfo=UTC), tick=False):
        assert verify_audit() is True
    after_task = client.get(PAGE).content.decode()

    assert "✓ intact" in after_command and "last verified" in after_command
    assert "last verified 2031-01-01 03:00 UTC" in after_task


@pytest.mark.parametrize("count", [5, 60])
def test_query_count_does_not_grow_with_events(client, django_assert_max_num_queries, count):
    with transaction.atomic():
        for i in range(count):
            audit.record(
                actor=SYSTEM,
                action=f"kind.{i % 7}",
                object_id=str(i),
                model_name=f"m{i % 3}",
                after={"i": i},
            )
    person("auditor", "ada")
    login(client, "ada")
    with django_assert_max_num_queries(16):  # 2 of them: the My work count in the nav
        assert client.get(PAGE).status_code == 200
    with django_assert_max_num_queries(8):
        assert len(exported(client)) > count


def test_the_audit_link_shows_only_to_those_who_may_read_the_log(client):
    link = f'href="{PAGE}"'
    person("ml_engineer", "erin")
    login(client, "erin")
    assert link not in client.get(reverse("console:overview")).content.decode()
    assert client.get(PAGE).status_code == 403

    person("auditor", "ada")
    login(client, "ada")
    assert link in client.get(reverse("console:overview")).content.decode()
