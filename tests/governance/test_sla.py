"""Stage time limits: overdue versions are escalated once per stay and their approvers told.

time-machine drives the clock; ``escalate_overdue`` reads it through ``timezone.now()``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings
from django.core import mail

from governance import audit, notify, sla
from governance.audit import Actor
from governance.models import AuditEvent, Escalation, Lifecycle, RoleGrant, Stage
from governance.policies import policy_publish
from governance.tasks import escalate_overdue_stages
from incidents.models import Notification
from incidents.notifications import deliver_due
from tests.concurrency import race
from tests.factories import ModelVersionFactory, RegisteredModelFactory, UserFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)


def put_in_stage(version, stage: str, entered: datetime) -> None:
    """Test-only shortcut: ``stage`` is a protected FSM field that only the lifecycle services move
    (checking gates and approvals); a queryset update places a version in a stage directly."""
    Lifecycle.objects.filter(version=version).update(stage=stage, stage_entered_at=entered)


def holder(username: str, role: str, *, model=None, email: str | None = None):
    """A user holding ``role`` globally or for ``model``."""
    user = UserFactory(
        username=username, email=f"{username}@example.org" if email is None else email
    )
    RoleGrant.objects.create(user=user, role=role, model=model)
    return user


def escalation_events():
    return AuditEvent.objects.filter(action="lifecycle.escalated")


@pytest.fixture(autouse=True)
def outbox_deliveries(monkeypatch) -> list:
    """Notices go through the incidents outbox (``GOVERNANCE_NOTIFY_HOOK``): its delivery task is
    recorded instead of sent to a broker; tests deliver with ``delivered()``."""
    calls: list = []
    monkeypatch.setattr(
        "incidents.notifications.enqueue_delivery", lambda countdown=None: calls.append(countdown)
    )
    return calls


def delivered() -> list:
    """What the delivery task does: send the due outbox rows; returns the mail sent so far."""
    deliver_due()
    return mail.outbox


@pytest.fixture
def run_at(django_capture_on_commit_callbacks):
    """Run the sweep with the clock frozen at ``when``, executing the after-commit notifications."""

    def run(when: datetime) -> list[Escalation]:
        with (
            time_machine.travel(when, tick=False),
            django_capture_on_commit_callbacks(execute=True),
        ):
            return sla.escalate_overdue()

    return run


# --- the limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "limit"),
    [
        (Stage.DEVELOPMENT, timedelta(days=14)),
        (Stage.VALIDATION, timedelta(days=3)),
        (Stage.DEGRADED, timedelta(hours=48)),
    ],
)
def test_a_stage_is_escalated_just_after_its_limit_and_not_before(run_at, stage, limit):
    version = ModelVersionFactory()
    put_in_stage(version, stage, T0)

    assert run_at(T0 + limit - SECOND) == []
    assert run_at(T0 + limit) == []  # at the deadline itself it is not yet over
    [escalation] = run_at(T0 + limit + SECOND)

    assert escalation.lifecycle.version == version
    assert (escalation.stage, escalation.stage_entered_at) == (stage, T0)
    assert escalation.deadline == T0 + limit


@pytest.mark.parametrize(
    "number, days",
    [
        pytest.param("1.4.0", 14, id="minor: 7 days from the end of a 7-day shadow"),
        pytest.param("1.3.1", 7, id="patch: 7 days, a patch has no shadow period"),
    ],
)
def test_staging_limit_after_1_3_0(run_at, number, days):
    previous = ModelVersionFactory(version="1.3.0")
    staged = ModelVersionFactory(model=previous.model, version=number)
    put_in_stage(staged, Stage.STAGING, T0)

    assert sla.deadline_for(Lifecycle.objects.get(version=staged)) == T0 + days * DAY
    assert run_at(T0 + days * DAY - SECOND) == []
    [escalation] = run_at(T0 + days * DAY + SECOND)
    assert escalation.deadline == T0 + days * DAY


def test_staging_limit_of_a_first_version_includes_the_shadow_period_its_replay_stands_in_for():
    first = ModelVersionFactory(version="1.0.0")
    put_in_stage(first, Stage.STAGING, T0)

    assert sla.deadline_for(Lifecycle.objects.get(version=first)) == T0 + 14 * DAY


def test_the_bump_is_judged_against_the_newest_lower_version_not_the_patch_number():
    older = ModelVersionFactory(version="1.3.0")
    # 1.4.1 with no 1.4.0 before it is a MINOR bump from 1.3.0: it needs the shadow period.
    skipped = ModelVersionFactory(model=older.model, version="1.4.1")
    put_in_stage(skipped, Stage.STAGING, T0)

    assert not sla.is_fast_tracked(skipped)
    assert sla.deadline_for(Lifecycle.objects.get(version=skipped)) == T0 + 14 * DAY


def test_staging_limit_follows_the_shadow_days_of_the_current_validation_policy():
    previous = ModelVersionFactory(version="1.3.0")
    minor = ModelVersionFactory(model=previous.model, version="1.4.0")
    policy_publish(
        "validation",
        model=minor.model,
        values={"shadow_days": 10},
        reason="longer shadow",
        actor=Actor.system("tests"),
    )
    put_in_stage(minor, Stage.STAGING, T0)

    assert sla.deadline_for(Lifecycle.objects.get(version=minor)) == T0 + 17 * DAY


@pytest.mark.parametrize(
    "stage",
    [Stage.PRODUCTION, Stage.MONITORING, Stage.RETRAINING, Stage.ROLLBACK, Stage.RETIRED],
)
def test_a_stage_without_a_limit_never_escalates(run_at, stage):
    version = ModelVersionFactory()
    put_in_stage(version, stage, T0)

    assert sla.deadline_for(Lifecycle.objects.get(version=version)) is None
    assert run_at(T0 + 365 * DAY) == []
    assert not Escalation.objects.exists()


# --- once per stay -----------------------------------------------------------------------------


def test_running_twice_creates_one_escalation_and_one_audit_event(run_at):
    version = ModelVersionFactory()
    put_in_stage(version, Stage.VALIDATION, T0)

    assert len(run_at(T0 + 4 * DAY)) == 1
    assert run_at(T0 + 5 * DAY) == []

    assert Escalation.objects.count() == 1
    assert escalation_events().count() == 1


def test_leaving_and_re_entering_the_stage_escalates_the_new_stay_again(run_at):
    version = ModelVersionFactory()
    put_in_stage(version, Stage.VALIDATION, T0)
    [first] = run_at(T0 + 4 * DAY)

    put_in_stage(version, Stage.DEVELOPMENT, T0 + 5 * DAY)  # validation failed
    assert run_at(T0 + 6 * DAY) == []
    put_in_stage(version, Stage.VALIDATION, T0 + 7 * DAY)  # resubmitted
    assert run_at(T0 + 10 * DAY) == []
    [second] = run_at(T0 + 10 * DAY + SECOND)

    assert second.pk != first.pk
    assert second.stage_entered_at == T0 + 7 * DAY
    assert Escalation.objects.count() == 2
    assert escalation_events().count() == 2


def test_a_worker_that_read_the_candidate_before_another_escalated_it_creates_nothing():
    version = ModelVersionFactory()
    put_in_stage(version, Stage.VALIDATION, T0)
    lifecycle = Lifecycle.objects.get(version=version)

    assert sla.escalate(lifecycle, deadline=T0 + 3 * DAY) is not None
    # The second worker's read predates the first's commit; the unique constraint stops it.
    assert sla.escalate(lifecycle, deadline=T0 + 3 * DAY) is None

    assert Escalation.objects.count() == 1
    assert escalation_events().count() == 1


def test_a_version_that_left_the_stage_since_it_was_read_is_not_escalated():
    version = ModelVersionFactory()
    put_in_stage(version, Stage.VALIDATION, T0)
    stale = Lifecycle.objects.get(version=version)
    put_in_stage(version, Stage.STAGING, T0 + 3 * DAY)

    assert sla.escalate(stale, deadline=T0 + 3 * DAY) is None
    assert not Escalation.objects.exists()
    assert not escalation_events().exists()


def test_the_escalation_is_audited_by_the_system_with_stage_entry_deadline_and_roles(run_at):
    previous = ModelVersionFactory(version="2.0.0")
    patch = ModelVersionFactory(model=previous.model, version="2.0.1")
    put_in_stage(patch, Stage.STAGING, T0)

    run_at(T0 + 8 * DAY)

    [event] = escalation_events()
    assert event.actor == "system:stage time limits"
    assert event.model_name == patch.model.name
    assert (event.object_type, event.object_id) == ("governance.Lifecycle", str(patch.lifecycle.pk))
    assert event.after == {
        "stage": "staging",
        "entered": T0.isoformat(),
        "deadline": (T0 + 7 * DAY).isoformat(),
        "notify_roles": ["ml_lead", "ethics_officer"],
    }
    assert audit.verify().valid


# --- who is told -------------------------------------------------------------------------------


def test_staging_escalation_emails_the_ml_leads_and_ethics_officers_of_that_model_only(run_at):
    previous = ModelVersionFactory(version="1.3.0")
    model = previous.model
    patch = ModelVersionFactory(model=model, version="1.3.1")
    other_model = RegisteredModelFactory()
    holder("lead", "ml_lead")
    holder("model-lead", "ml_lead", model=model)
    holder("other-lead", "ml_lead", model=other_model)
    holder("ethics", "ethics_officer")
    holder("pm", "product_manager")
    holder("engineer", "ml_engineer")
    put_in_stage(patch, Stage.STAGING, T0)

    [escalation] = run_at(T0 + 7 * DAY + SECOND)

    assert mail.outbox == []  # written to the outbox, sent by its delivery task
    told = {tuple(sorted(message.to)) for message in delivered()}
    assert told == {
        ("lead@example.org", "model-lead@example.org"),
        ("ethics@example.org",),
    }
    assert all(str(patch) in message.subject for message in mail.outbox)
    rows = Notification.objects.order_by("role")
    assert [(n.channel, n.role, n.status) for n in rows] == [
        ("email", "ethics_officer", "sent"),
        ("email", "ml_lead", "sent"),
    ]
    assert {n.dedup_key for n in rows} == {
        f"escalation:{escalation.pk}:ml_lead",
        f"escalation:{escalation.pk}:ethics_officer",
    }
    escalation.refresh_from_db()
    assert escalation.notified == [
        {"role": "ml_lead", "addresses": ["lead@example.org", "model-lead@example.org"]},
        {"role": "ethics_officer", "addresses": ["ethics@example.org"]},
    ]


def test_development_escalation_asks_the_ml_engineers_for_peer_review(run_at):
    version = ModelVersionFactory()
    holder("peer", "ml_engineer")
    holder("lead", "ml_lead")
    put_in_stage(version, Stage.DEVELOPMENT, T0)

    run_at(T0 + 15 * DAY)

    [message] = delivered()
    assert message.to == ["peer@example.org"]
    assert "development" in message.subject


def test_degraded_escalation_emails_the_ml_lead(run_at):
    version = ModelVersionFactory()
    holder("lead", "ml_lead", model=version.model)
    holder("ethics", "ethics_officer")
    put_in_stage(version, Stage.DEGRADED, T0)

    run_at(T0 + timedelta(hours=48) + SECOND)

    [message] = delivered()
    assert message.to == ["lead@example.org"]


def test_no_email_is_sent_again_when_the_sweep_runs_again(run_at):
    version = ModelVersionFactory()
    holder("lead", "ml_lead")
    put_in_stage(version, Stage.VALIDATION, T0)

    run_at(T0 + 4 * DAY)
    delivered()
    run_at(T0 + 4 * DAY + timedelta(minutes=15))

    assert len(delivered()) == 1
    assert Notification.objects.count() == 1


def test_notify_role_writes_one_outbox_email_per_dedup_key_to_holders_with_an_address(
    django_capture_on_commit_callbacks, outbox_deliveries
):
    model = RegisteredModelFactory()
    holder("lead", "ml_lead")
    holder("silent", "ml_lead", model=model, email="")

    with django_capture_on_commit_callbacks(execute=True):
        told = notify.notify_role(
            role="ml_lead", model=model, subject="s", body="b", dedup_key="test:1"
        )
        again = notify.notify_role(
            role="ml_lead", model=model, subject="s", body="b", dedup_key="test:1"
        )

    assert told == again == ["lead@example.org"]
    row = Notification.objects.get()
    assert (row.channel, row.role, row.model) == ("email", "ml_lead", model)
    assert row.dedup_key == "test:1"
    assert outbox_deliveries == [None]  # delivery enqueued once, after commit
    assert [m.to for m in delivered()] == [["lead@example.org"]]
    assert delivered() == mail.outbox and len(mail.outbox) == 1  # never sent twice


def test_notify_role_without_a_model_tells_only_global_holders_and_sends_nothing_to_nobody():
    model = RegisteredModelFactory()
    holder("scoped", "ml_lead", model=model)

    assert (
        notify.notify_role(role="ml_lead", model=None, subject="s", body="b", dedup_key="k") == []
    )
    assert delivered() == []
    assert Notification.objects.get().status == "failed"  # visible in the outbox: nobody to tell


recorded: list[dict] = []


def recording_hook(**notice) -> list[str]:
    recorded.append(notice)
    return ["someone@example.org"]


def test_notify_role_hands_the_notice_to_the_configured_hook(settings):
    settings.GOVERNANCE_NOTIFY_HOOK = "tests.governance.test_sla.recording_hook"
    recorded.clear()

    told = notify.notify_role(role="ml_lead", model=None, subject="s", body="b", dedup_key="k")

    assert told == ["someone@example.org"]
    assert recorded == [
        {"role": "ml_lead", "model": None, "subject": "s", "body": "b", "dedup_key": "k"}
    ]
    assert not Notification.objects.exists()


def test_the_plain_email_hook_emails_at_once_and_logs_users_without_an_address(caplog, settings):
    settings.GOVERNANCE_NOTIFY_HOOK = "governance.notify.email_role"
    model = RegisteredModelFactory()
    holder("lead", "ml_lead")
    holder("silent", "ml_lead", model=model, email="")

    with caplog.at_level(logging.WARNING, logger="governance.notify"):
        told = notify.notify_role(
            role="ml_lead", model=model, subject="s", body="b", dedup_key="test:1"
        )

    assert told == ["lead@example.org"]
    assert mail.outbox[0].to == ["lead@example.org"]
    assert "silent has no email address" in caplog.text
    assert not Notification.objects.exists()


# --- the periodic task -------------------------------------------------------------------------


def test_the_task_escalates_and_returns_how_many_it_created(django_capture_on_commit_callbacks):
    for stage in (Stage.VALIDATION, Stage.DEGRADED):
        put_in_stage(ModelVersionFactory(), stage, T0)

    with time_machine.travel(T0 + 10 * DAY, tick=False):
        assert escalate_overdue_stages() == 2
        assert escalate_overdue_stages() == 0


def test_beat_runs_the_escalation_task_every_fifteen_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["escalate-overdue-stages"]
    assert entry == {"task": escalate_overdue_stages.name, "schedule": 900.0}


# --- concurrency (PostgreSQL) ------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_escalate_each_stay_once():
    versions = [ModelVersionFactory() for _ in range(5)]
    for version in versions:
        put_in_stage(version, Stage.VALIDATION, T0)
    results, errors = race(lambda _: len(sla.escalate_overdue(now=T0 + 4 * DAY)), 6)

    assert errors == []
    assert sum(results) == len(versions)
    assert Escalation.objects.count() == len(versions)
    assert escalation_events().count() == len(versions)
    assert audit.verify().valid


def test_one_failing_escalation_does_not_stop_the_others_and_the_error_is_raised(monkeypatch):
    broken, fine = ModelVersionFactory(), ModelVersionFactory()
    put_in_stage(broken, Stage.VALIDATION, T0)
    put_in_stage(fine, Stage.VALIDATION, T0 + SECOND)
    real_escalate = sla.escalate

    def flaky(lifecycle, *, deadline):
        if lifecycle.version_id == broken.pk:
            raise RuntimeError("database hiccup")
        return real_escalate(lifecycle, deadline=deadline)

    monkeypatch.setattr(sla, "escalate", flaky)

    with pytest.raises(RuntimeError, match="hiccup"):
        sla.escalate_overdue(now=T0 + 4 * DAY)
    assert list(Escalation.objects.values_list("lifecycle__version", flat=True)) == [fine.pk]
