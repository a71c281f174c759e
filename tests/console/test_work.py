"""My work: what waits for a person, from their roles and per-model grants, with the count in
the navigation bar; and the admin's approvals inbox listing the incident steps too."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from console.work import my_work, work_count
from governance import sla
from governance.models import Escalation, Lifecycle, Stage
from monitoring.models import AuditTask
from tests.console.incident_helpers import grant, no_broker, opened  # noqa: F401
from tests.governance.lifecycle_helpers import approve, new_version, to_validation

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]
INBOX = "/admin/governance/lifecycle/inbox/"


def nav_count(html: str) -> int | None:
    found = re.search(r'My work <span class="count">(\d+)<', html)
    return int(found.group(1)) if found else None


def titles(user) -> list[str]:
    return [item.title for item in my_work(user).items]


def test_an_engineer_sees_the_incident_steps_waiting_on_their_role(client):
    incident = opened()  # playbook 2: step 3 (ML engineer, 1 h) and step 5 (ML team, 24 h)
    erin = grant("erin", "ml_engineer")
    client.force_login(erin)

    html = client.get(reverse("console:work")).content.decode()
    inbox = client.get(INBOX).content.decode()

    assert titles(erin) == [
        "Step 3: Assess impact: how many predictions affected?",
        "Step 5: Root-cause analysis: data? model? threshold?",
        "Step 7: Full documentation in audit log",
    ]
    assert f'href="/console/incidents/{incident.pk}/#step-3"' in html
    assert nav_count(html) == 3
    assert "Nothing waits for you" not in inbox
    assert f"/console/incidents/{incident.pk}/#step-5" in inbox


def test_per_model_grants_scope_the_work(client):
    mine = opened()
    theirs = opened()
    scoped = grant("sam", "ml_engineer", model=mine.model.name)
    client.force_login(scoped)

    html = client.get(reverse("console:work")).content.decode()

    assert f"/console/incidents/{mine.pk}/" in html
    assert f"/console/incidents/{theirs.pk}/" not in html
    assert theirs.model.name not in html
    assert nav_count(html) == 3


def test_a_role_without_steps_waiting_has_nothing(client):
    opened()
    client.force_login(grant("pia", "product_manager"))
    html = client.get(reverse("console:work")).content.decode()
    assert "Nothing waits for you." in html and nav_count(html) is None


def test_completing_a_step_takes_it_off_the_list(client):
    incident = opened()
    erin = grant("erin", "ml_engineer")
    client.force_login(erin)
    client.post(
        reverse("console:incident-step-complete", args=[incident.pk, 3]), {"note": "12 affected"}
    )
    assert nav_count(client.get(reverse("console:incidents")).content.decode()) == 2
    assert "Step 3: Assess impact: how many predictions affected?" not in titles(erin)


def test_sign_offs_come_from_the_inbox_rule(client):
    version = new_version("1.0.0")
    to_validation(version)  # approve_for_staging waits for an ML Lead
    lead = grant("lee", "ml_lead")
    client.force_login(lead)

    work = my_work(lead)
    html = client.get(reverse("console:work")).content.decode()
    assert [i.title for i in work.items] == [f"Sign off approve for staging of {version}"]
    item = work.items[0]
    assert item.due_at == Lifecycle.objects.get(version=version).stage_entered_at + timedelta(
        days=3
    )
    assert item.url == INBOX and nav_count(html) == 1

    approve(version, "approve_for_staging", "ml_lead", username="lee")
    assert my_work(lead).items == []
    assert str(version) in client.get(INBOX).content.decode()  # the inbox keeps the decision


def test_no_sign_off_for_a_conflict_of_interest_nor_a_ci_account():
    version = new_version("1.0.0")
    to_validation(version)
    engineer = version.responsible_engineer
    grant(engineer.username, "ml_lead")
    ci = grant("robot", "ci")
    grant("robot", "ml_lead")
    assert my_work(engineer).items == [] and my_work(ci).items == []


def test_stays_over_their_limit_and_audit_tasks_reach_the_ml_lead_of_the_model():
    version = new_version("1.0.0")
    to_validation(version)
    lifecycle = Lifecycle.objects.get(version=version)
    deadline = lifecycle.stage_entered_at + timedelta(days=3)
    Escalation.objects.create(
        lifecycle=lifecycle,
        stage=Stage.VALIDATION,
        stage_entered_at=lifecycle.stage_entered_at,
        deadline=deadline,
    )
    AuditTask.objects.create(
        model=version.model, version=version, period="2026-11", due_at=timezone.now()
    )
    own = grant("lee", "ml_lead", model=version.model.name)
    other = grant("lou", "ml_lead", model=new_version("1.0.0").model.name)

    found = {i.kind: i for i in my_work(own).items}
    name = version.model.name
    assert found["escalation"].title == f"{name} 1.0.0 is over its validation time limit"
    assert found["escalation"].due_at == deadline == sla.deadline_for(lifecycle)
    assert found["audit_task"].title == f"Monthly audit of {version.model.name} for 2026-11"
    assert not [i for i in my_work(other).items if i.kind in ("escalation", "audit_task")]

    Lifecycle.objects.filter(pk=lifecycle.pk).update(  # set-up only: the stay ended
        stage=Stage.STAGING, stage_entered_at=timezone.now()
    )
    assert "escalation" not in {i.kind for i in my_work(own).items}


def test_the_nav_count_costs_the_same_queries_for_one_item_or_many(
    client, django_assert_max_num_queries
):
    """Grants, sign-offs (lifecycles, conflicts, own approvals), steps, escalations, audit
    tasks and review items: eight queries at most, whatever the amount of work."""
    version = new_version("1.0.0")
    to_validation(version)
    opened()
    lead = grant("lee", "ml_lead")
    with CaptureQueriesContext(connection) as one:
        assert work_count(lead) == 3  # a sign-off, steps 4 and 5 (the ML Lead is in both)
    for _ in range(3):
        opened()
        to_validation(new_version("1.0.0"))
    with CaptureQueriesContext(connection) as many:
        assert work_count(lead) == 12
    assert len(many) == len(one) <= 8

    client.force_login(lead)
    # the session, the user, the halt banner's three, and the work (shared with the nav)
    with django_assert_max_num_queries(len(one) + 5):
        html = client.get(reverse("console:work")).content.decode()
    assert nav_count(html) == 12


def test_the_nav_count_is_the_length_of_the_list_for_every_kind_of_work():
    """console.work.nav_work counts from the same reads as my_work without building the items."""
    from monitoring.models import Alert, ReviewItem

    version = new_version("1.0.0")
    to_validation(version)
    lifecycle = Lifecycle.objects.get(version=version)
    Escalation.objects.create(
        lifecycle=lifecycle,
        stage=Stage.VALIDATION,
        stage_entered_at=lifecycle.stage_entered_at,
        deadline=lifecycle.stage_entered_at + timedelta(days=3),
    )
    AuditTask.objects.create(
        model=version.model, version=version, period="2026-11", due_at=timezone.now()
    )
    incident = opened()
    alerts = list(Alert.objects.filter(model=incident.model))
    for alert in alerts:  # set-up only: the alerts as if queued for the retraining review
        ReviewItem.objects.create(alert=alert)
    users = [
        grant("lee", "ml_lead"),
        grant("lou", "ml_lead", model=version.model.name),
        grant("erin", "ml_engineer"),
        grant("pia", "product_manager"),
    ]
    kinds = {item.kind for item in my_work(users[0]).items}
    assert alerts and {"approval", "incident_step", "escalation", "audit_task", "review"} <= kinds
    for user in users:
        assert work_count(user) == len(my_work(user).items), user.username
    assert work_count(users[3]) == 0
