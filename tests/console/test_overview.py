"""The overview: what is live, halted, on fire and overdue, for exactly the models one may see."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from governance.audit import Actor
from governance.models import Lifecycle, RoleGrant, Stage
from governance.policies import policy_in_force
from incidents.models import Incident, IncidentKind, IncidentStatus, StepRun, StepStatus
from monitoring.models import Alert, AlertStatus, Check, MonitorRun, Severity
from serving.models import Halt
from tests.factories import ModelVersionFactory, RegisteredModelFactory, UserFactory, alert_of

pytestmark = pytest.mark.django_db


def _live(model, version="1.0.0", stage=Stage.MONITORING):
    live = ModelVersionFactory(model=model, version=version)
    Lifecycle.objects.filter(version=live).update(stage=stage)  # set-up only
    return live


def _alert(version, severity):
    now = timezone.now()
    run = MonitorRun.objects.create(
        model=version.model,
        version=version,
        kind=Check.DATA_DRIFT,
        policy=policy_in_force("monitoring", version.model, Actor.system("tests")),
        window_start=now - timedelta(days=1, seconds=MonitorRun.objects.count()),
        window_end=now,
    )
    return alert_of(run, severity, metric="psi")


def _incident(version, *, step_due):
    incident = Incident.objects.create(
        kind=IncidentKind.FAIRNESS,
        severity="critical",
        title=f"fairness breach on {version.model.name}",
        model=version.model,
        version=version,
        status=IncidentStatus.OPEN,
        opened_by="tests",
    )
    StepRun.objects.create(
        incident=incident,
        order=1,
        action="Raise",
        responsible="system",
        automated=True,
        status=StepStatus.DONE,
    )
    StepRun.objects.create(
        incident=incident,
        order=2,
        action="Assess the affected groups",
        responsible="Ethics Officer (2h)",
        roles=["ethics_officer"],
        status=StepStatus.WAITING,
        due_at=step_due,
    )
    return incident


def test_overview_shows_live_version_worst_alert_incident_next_step_and_overdue(client, lead):
    model = RegisteredModelFactory(name="hotspot")
    live = _live(model)
    _alert(live, Severity.MEDIUM)
    _alert(live, Severity.CRITICAL)
    resolved = _alert(live, Severity.HIGH)
    Alert.objects.filter(pk=resolved.pk).update(status=AlertStatus.RESOLVED)
    _incident(live, step_due=timezone.now() - timedelta(minutes=5))
    rolled_back = ModelVersionFactory(model=model, version="0.9.0")
    _alert(rolled_back, Severity.CRITICAL)
    stuck = ModelVersionFactory(model=model, version="1.1.0")
    Lifecycle.objects.filter(version=stuck).update(
        stage=Stage.VALIDATION, stage_entered_at=timezone.now() - timedelta(days=4)
    )

    page = client.get(reverse("console:overview")).content.decode()

    assert "1.0.0" in page and "Monitoring" in page
    assert "health-critical" in page and "2 unresolved alerts" in page
    assert "1 unresolved on versions no longer live" in page
    assert "Next: step 2, Assess the affected groups" in page
    assert "overdue" in page
    assert "1.1.0</a>\n            in Validation" in page


def test_a_halt_shows_as_a_red_banner_on_every_page_and_in_the_models_health(client, lead):
    model = RegisteredModelFactory(name="hotspot")
    _alert(_live(model), Severity.CRITICAL)
    Halt.objects.create(scope="hotspot", reason="suspected data leak", engaged_by_label="lee")

    overview = client.get(reverse("console:overview")).content.decode()
    registry = client.get(reverse("registry:model-list")).content.decode()

    assert 'class="halt-banner" role="alert"' in overview
    assert "suspected data leak" in registry and "halt-banner" in registry
    assert "health-halted" in overview


def test_per_model_grants_show_exactly_those_models_and_their_halts(client):
    mine, theirs = RegisteredModelFactory(name="mine"), RegisteredModelFactory(name="theirs")
    _live(mine), _live(theirs)
    Halt.objects.create(scope="theirs", reason="secret reason", engaged_by_label="x")
    user = UserFactory(username="scoped")
    RoleGrant.objects.create(user=user, role="ml_engineer", model=mine)
    client.force_login(user)

    page = client.get(reverse("console:overview")).content.decode()

    assert ">mine</a>" in page
    assert "theirs" not in page and "secret reason" not in page


def test_a_user_without_grants_sees_no_model_and_is_told_why(client):
    RegisteredModelFactory(name="hotspot")
    client.force_login(UserFactory(username="nobody", is_staff=True))

    page = client.get(reverse("console:overview")).content.decode()

    assert "hotspot" not in page and "You hold no role on any model yet" in page


def test_anonymous_is_sent_to_log_in(client):
    response = client.get(reverse("console:overview"))
    assert response.status_code == 302 and "login" in response["Location"]


def test_the_refreshed_table_is_served_alone(client, lead):
    _live(RegisteredModelFactory(name="hotspot"))
    rows = client.get(reverse("console:overview-rows")).content.decode()
    assert rows.lstrip().startswith("<table") and "<html" not in rows


def test_the_query_count_does_not_grow_with_the_number_of_models(
    client, lead, django_assert_max_num_queries
):
    for i in range(3):
        live = _live(RegisteredModelFactory(name=f"m{i}"))
        _alert(live, Severity.HIGH)
        _incident(live, step_due=timezone.now() + timedelta(hours=1))
    with django_assert_max_num_queries(19) as few:  # 5 of them: the My work count in the nav
        client.get(reverse("console:overview"))
    for i in range(3, 23):
        live = _live(RegisteredModelFactory(name=f"m{i}"))
        _alert(live, Severity.HIGH)
        _incident(live, step_due=timezone.now() + timedelta(hours=1))
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(reverse("console:overview"))


def test_a_role_holder_on_an_empty_registry_is_told_no_model_exists_yet(client, lead):
    page = client.get(reverse("console:overview")).content.decode()

    assert "No model is registered yet" in page
    assert "You hold no role" not in page
