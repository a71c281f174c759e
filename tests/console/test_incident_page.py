"""The incident pages: the list (open first), one incident in words with its checklist, and
completing a step from the page through the service the API uses."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from governance import services
from governance.models import AuditEvent
from incidents.models import Incident, IncidentStatus, Rollback, RollbackStatus, StepRun
from tests.console.incident_helpers import SYSTEM, grant, no_broker, opened  # noqa: F401

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]


def page_of(client, incident) -> str:
    response = client.get(reverse("console:incident", args=[incident.pk]))
    assert response.status_code == 200
    return response.content.decode()


def complete(client, incident, order, **data):
    url = reverse("console:incident-step-complete", args=[incident.pk, order])
    return client.post(url, data)


def text(html: str) -> str:
    """The page's words without tags, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_page_says_what_happened_in_words(client):
    incident = opened(alerts=2)  # the second critical alert in 24 h rolls v2 back
    client.force_login(grant("pia", "product_manager"))

    html = page_of(client, incident)
    words = text(html)

    name = incident.model.name
    assert f"Critical fairness incident on {name} 1.1.0" in words
    assert f"incident {incident.pk} (fairness" not in html and "object (" not in html
    # the checklist: order, action, owner role, due time, status
    assert "Step 3: Assess impact: how many predictions affected?" in words
    assert "Owner: ML engineer" in words and "Owner: ML lead or Ethics officer" in words
    assert "due " in words and "Waiting" in words
    # the automated steps, the rollback and the timeline in words
    assert "Automated (notify_ethics_officer)" in words
    assert "Automatic rollback of 1.1.0: Requested" in words and "Not verified yet." in words
    assert "The platform ran step 2 (Immediately notify Ethics Officer): done" in words
    assert "opened the incident" in words
    # each linked alert once, as a link to the alerts page
    alerts = list(incident.alerts.values_list("pk", flat=True))
    assert len(alerts) == 2
    for pk in alerts:
        assert html.count(f'#alert-{pk}"') == 1
    assert reverse("console:halts") in html
    opened_at = incident.created_at
    start = (opened_at - timedelta(days=2)).date().isoformat()
    end = (opened_at + timedelta(days=2)).date().isoformat()
    assert f'href="/console/models/{name}/?from={start}&amp;to={end}"' in html
    assert "Charts around the opening" in words
    # the fairness charts themselves, fed by the model's series around the opening, marked
    series = f"/console/models/{name}/series.json?from={start}&amp;to={end}"
    assert f'data-series-url="{series}"' in html
    assert f'data-mark-label="incident {incident.pk} opened"' in html
    assert 'data-chart="fairness_gap"' in html and 'data-chart="fairness_groups"' in html


def test_overdue_steps_are_red_and_say_so(client):
    incident = opened()
    client.force_login(grant("pia", "product_manager"))
    assert "overdue" not in page_of(client, incident)

    with time_machine.travel(timezone.now() + timedelta(hours=1, minutes=5)):
        html = page_of(client, incident)

    step3 = html[html.index('id="step-3"') : html.index('id="step-4"')]
    assert '<strong class="overdue">overdue</strong>' in step3 and "step-overdue" in step3
    step4 = html[html.index('id="step-4"') : html.index('id="step-5"')]
    assert "overdue" not in step4  # due in 2 h


def test_completing_a_step_from_the_form_is_the_apis_completion(client):
    incident = opened()
    erin = grant("erin", "ml_engineer")
    client.force_login(erin)
    html = page_of(client, incident)
    form_url = reverse("console:incident-step-complete", args=[incident.pk, 3])
    assert f'action="{form_url}"' in html

    response = complete(client, incident, 3, note="312 predictions affected in the north-east")

    assert response.status_code == 302
    assert response["Location"].endswith(f"/console/incidents/{incident.pk}/#step-3")
    run = StepRun.objects.get(incident=incident, order=3)
    assert (run.status, run.completed_by) == ("done", "erin")
    words = text(page_of(client, incident))
    assert "Completed by erin" in words and "312 predictions affected" in words
    assert "erin completed step 3: Assess impact: how many predictions affected?" in words
    assert "Step 3 (Assess impact: how many predictions affected?) completed." in words

    # the same step of another incident, through the API: the same audit event
    other = opened()
    services.role_grant(username="erin", roles=["ml_engineer"], actor=SYSTEM)
    _, token = services.token_create(username="erin", actor=SYSTEM)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    answer = api.post(
        f"/api/v1/incidents/{other.pk}/steps/3/complete/", {"note": "same"}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    by_form, by_api = AuditEvent.objects.filter(action="incidents.step_completed").order_by("seq")
    assert by_form.actor == "erin" and by_api.actor.startswith("erin")
    assert by_form.object_repr.startswith(f"incident {incident.pk} step 3")
    assert set(by_form.after) == set(by_api.after)
    assert (by_form.before["status"], by_form.after["status"]) == ("waiting", "done")


def test_a_refused_form_comes_back_filled_in_with_the_reason(client):
    incident = opened()
    client.force_login(grant("lee", "ml_lead"))

    response = complete(client, incident, 4, note="not needed", decision="no_rollback")

    assert response.status_code == 400
    html = response.content.decode()
    assert "justification: required: why the live version is not rolled back" in html
    assert ">not needed</textarea>" in html
    assert '<option value="no_rollback" selected>' in html
    assert StepRun.objects.get(incident=incident, order=4).status == "waiting"


def test_a_decision_to_halt_mitigates_and_the_status_says_what_is_left(client):
    incident = opened()
    client.force_login(grant("olu", "ethics_officer"))

    complete(client, incident, 4, note="groups harmed", decision="halt")

    incident.refresh_from_db()
    assert incident.status == IncidentStatus.MITIGATING and incident.halt is not None
    words = text(page_of(client, incident))
    assert "Mitigating Inference halted; 4 steps still open: it is resolved when" in words
    assert "Halt inference (step 4), decided by olu" in words
    assert "olu completed step 4: Consider rollback or emergency halt, deciding to halt" in words
    assert f"Inference of {incident.model.name} halted by olu" in words


def test_the_rollback_and_its_verification_are_shown(client):
    incident = opened(alerts=2)
    rollback = Rollback.objects.get(incident=incident)
    Rollback.objects.filter(pk=rollback.pk).update(  # set-up only: as the task leaves it
        status=RollbackStatus.COMPLETED,
        to_version=incident.model.versions.get(version="1.0.0"),
        switched_at=timezone.now(),
        verified_at=timezone.now(),
        completed_at=timezone.now(),
        verification="1.0.0 answered a real prediction: 0.42",
    )
    client.force_login(grant("pia", "product_manager"))
    words = text(page_of(client, incident))
    assert "Automatic rollback of 1.1.0 to 1.0.0: Completed" in words
    assert "1.0.0 answered a real prediction: 0.42" in words


def test_who_may_not_complete_sees_no_button_and_is_refused(client):
    incident = opened()
    form_url = reverse("console:incident-step-complete", args=[incident.pk, 3])

    client.force_login(grant("pia", "product_manager"))  # reads, completes nothing
    assert form_url not in page_of(client, incident)
    assert complete(client, incident, 3, note="x").status_code == 403

    client.force_login(grant("dana", "data_engineer"))  # completes steps, not this one
    assert form_url not in page_of(client, incident)
    refused = complete(client, incident, 3, note="x")
    assert refused.status_code == 403 and "ml_engineer" in refused.content.decode()

    elsewhere = opened().model.name
    outsider = grant("otto", "ml_engineer", model=elsewhere)
    client.force_login(outsider)
    assert client.get(reverse("console:incident", args=[incident.pk])).status_code == 404
    assert complete(client, incident, 3, note="x").status_code == 404
    assert StepRun.objects.get(incident=incident, order=3).status == "waiting"

    client.logout()
    assert complete(client, incident, 3, note="x").status_code == 302  # to the login


def test_the_list_puts_open_incidents_first_and_filters(client):
    first = opened()
    second = opened("concept_drift", "high")
    Incident.objects.filter(pk=first.pk).update(status=IncidentStatus.RESOLVED)
    client.force_login(grant("pia", "product_manager"))

    html = client.get(reverse("console:incidents")).content.decode()
    resolved = client.get(reverse("console:incidents"), {"status": "resolved"}).content.decode()
    by_model = client.get(
        reverse("console:incidents"), {"model": first.model.name, "status": "bogus"}
    ).content.decode()

    assert html.index(f"/console/incidents/{second.pk}/") < html.index(
        f"/console/incidents/{first.pk}/"
    )
    assert f"High performance incident on {second.model.name} 1.1.0" in html
    assert f"/console/incidents/{second.pk}/" not in resolved
    assert f"/console/incidents/{first.pk}/" in by_model
    assert f"/console/incidents/{second.pk}/" not in by_model


def test_the_pages_make_a_fixed_number_of_queries(client, django_assert_max_num_queries):
    incidents = [opened(alerts=2) for _ in range(3)]
    client.force_login(grant("erin", "ml_engineer"))
    with django_assert_max_num_queries(14):
        assert client.get(reverse("console:incidents")).status_code == 200
    with django_assert_max_num_queries(18):
        page_of(client, incidents[0])
