"""The gateway's outage hook: a model that cannot serve opens (or joins) a playbook-3 incident."""

from __future__ import annotations

import logging

import pytest

from governance import audit
from governance.models import AuditEvent
from incidents import outage
from incidents.models import Incident, StepRun
from incidents.outage import report_outage
from tests.incidents.helpers import live_single


def report(model: str, version: str | None = "1.0.0", kind: str = "load_failed", detail="boom"):
    return report_outage(model=model, version=version, kind=kind, detail=detail)


@pytest.mark.django_db
def test_an_outage_report_opens_a_high_playbook_3_incident_and_starts_the_playbook(
    enqueued, django_capture_on_commit_callbacks
):
    version = live_single()
    name = version.model.name

    with django_capture_on_commit_callbacks(execute=True):
        outcome = report(name, kind="digest_mismatch", detail="artifact digest differs")

    incident = Incident.objects.get()
    assert outcome == {"incident": incident.pk, "action": "opened"}
    assert (incident.kind, incident.severity, incident.playbook) == ("outage", "high", "3")
    assert incident.version == version and incident.status == "open"
    assert incident.opened_by == "system:incidents.outage"
    [opened] = incident.events.filter(kind="opened")
    assert opened.message == (
        f"opened by the gateway: {name} 1.0.0 cannot serve (digest_mismatch): "
        "artifact digest differs"
    )
    assert StepRun.objects.filter(incident=incident).exists()
    assert enqueued["playbook"] == [incident.pk]
    event = AuditEvent.objects.get(action="incidents.outage_reported")
    assert event.actor == "system:incidents.outage" and event.model_name == name
    assert event.after["kind"] == "digest_mismatch" and event.after["opened"] is True
    assert audit.verify().valid


@pytest.mark.django_db
def test_a_second_failure_joins_the_active_outage_incident_as_failed_again():
    version = live_single()
    name = version.model.name
    first = report(name, kind="load_failed", detail="no such file")
    second = report(name, kind="predict_failed", detail="out of memory")

    assert second == {"incident": first["incident"], "action": "joined"}
    incident = Incident.objects.get()
    [again] = incident.events.filter(kind="alert")
    assert again.message == (
        f"failed again: {name} 1.0.0 cannot serve (predict_failed): out of memory"
    )
    assert incident.events.filter(kind="step", message__startswith="playbook 3").count() == 1
    assert AuditEvent.objects.filter(action="incidents.outage_reported").count() == 2


@pytest.mark.django_db
def test_a_failure_after_the_outage_was_resolved_opens_a_new_incident():
    version = live_single()
    first = report(version.model.name)
    Incident.objects.filter(pk=first["incident"]).update(status="resolved")

    second = report(version.model.name)

    assert second["action"] == "opened" and second["incident"] != first["incident"]


@pytest.mark.django_db
def test_an_unknown_model_is_logged_and_ignored(caplog):
    with caplog.at_level(logging.ERROR, logger="incidents.outage"):
        assert report("no-such-model") is None
    assert "unknown model 'no-such-model'" in caplog.text
    assert not Incident.objects.exists()


@pytest.mark.django_db
def test_the_hook_never_raises_it_logs(monkeypatch, caplog):
    version = live_single()

    def broken(**kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(outage, "outage_report", broken)
    with caplog.at_level(logging.ERROR, logger="incidents.outage"):
        assert report(version.model.name) is None
    assert "database gone" in caplog.text


@pytest.mark.django_db
def test_an_unknown_version_still_opens_the_model_incident():
    version = live_single()
    outcome = report(version.model.name, version=None, kind="no_route", detail="nothing live")
    incident = Incident.objects.get(pk=outcome["incident"])
    assert incident.version is None
    assert "(no version) cannot serve (no_route)" in incident.events.get(kind="opened").message


# --- end to end: a broken artifact through the gateway ----------------------------------------


@pytest.fixture
def gateway(gateway, settings):
    """The cold gateway of the conftest, reporting outages to the incidents app."""
    settings.SERVING_OUTAGE_HOOK = "incidents.outage.report_outage"


@pytest.mark.django_db(transaction=True)  # the hook runs in the gateway's background thread
def test_a_corrupted_artifact_served_stale_opens_an_outage_incident_once(
    mlflow_models, api_client, gateway, settings
):
    from registry import mlflow_bridge
    from serving import background, cache, loader, router
    from tests.serving.helpers import instances, live, predict

    version = live(mlflow_models, seed=11)
    name = version.model.name
    ci = api_client("ci", username="gateway-ci")
    rows = instances(3)
    assert predict(ci, name, rows).status_code == 200
    cache.flush()
    path = mlflow_bridge.cache_path(version.artifact_digest)
    next(path.rglob("*.pkl")).write_bytes(b"not a model any more")
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    router.clear()
    loader.clear()
    cache.clear()

    stale = predict(ci, name, rows)
    predict(ci, name, rows[:1])  # a second failure within the report interval
    background.drain()

    assert stale.status_code == 200 and stale.json()["stale"] is True
    incident = Incident.objects.get()
    assert (incident.kind, incident.playbook, incident.version_id) == ("outage", "3", version.pk)
    assert "digest_mismatch" in incident.title
    assert incident.events.filter(kind="alert").count() == 0  # reported once per interval
    assert StepRun.objects.filter(incident=incident).exists()
    assert AuditEvent.objects.filter(action="incidents.outage_reported").count() == 1
