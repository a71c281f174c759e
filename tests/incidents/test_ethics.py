"""The ethics layer: hard limits per model; a breach halts inference, opens an ethics incident."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from governance import audit, services
from governance.audit import Actor
from governance.models import AuditEvent
from incidents import tasks
from incidents.alert_response import route_alert
from incidents.ethics import (
    ethics_check_alert,
    ethics_check_all,
    ethics_check_model,
    ethics_policy_current,
    ethics_policy_update,
)
from incidents.models import EthicsPolicy, Incident, Notification, StepRun
from monitoring.models import MonitorRun
from platform_core.errors import Forbidden, InvalidInput
from serving.halt import active_halt, halt_engage
from serving.models import Halt
from tests.factories import RegisteredModelFactory, UserFactory
from tests.governance.lifecycle_helpers import person, staff_login
from tests.incidents.helpers import alert_on, live_pair, live_single

pytestmark = pytest.mark.django_db

# A fairness run's per-attribute aggregates, as monitoring.checks.fairness stores them.
FAIR = {
    "judged": True,
    "n_judged_groups": 2,
    "equalized_odds_difference": 0.04,
    "fpr_ratio": 0.9,
    "fnr_ratio": 0.88,
    "demographic_parity_ratio": 0.93,
    "tpr_difference": 0.04,
    "fpr_difference": 0.01,
}
LIMITS = {"equalized_odds_difference": {"max": 0.3}, "fpr_ratio": {"min": 0.5}}


def ethicist() -> Actor:
    return person("ethics_officer")


def set_policy(model, limits=None, prohibited=None, reason="board decision") -> EthicsPolicy:
    return ethics_policy_update(
        model_name=model.name,
        fairness_limits=LIMITS if limits is None else limits,
        prohibited_features=prohibited or [],
        reason=reason,
        actor=ethicist(),
    )


def fairness_alert(version, severity: str = "critical", **attributes):
    """A fairness alert (critical unless said) whose run measured ``attributes`` (name ->
    aggregates)."""
    alert = alert_on(version, "fairness", severity)
    MonitorRun.objects.filter(pk=alert.run_id).update(
        status="succeeded", metrics={"attributes": attributes}
    )
    alert.run.refresh_from_db()
    return alert


def fairness_run(version, **attributes) -> MonitorRun:
    return fairness_alert(version, **attributes).run


def ethics_incident() -> Incident:
    return Incident.objects.get(kind="ethics")


# --- the policy --------------------------------------------------------------------------------


def test_only_an_ethics_officer_of_the_model_may_change_its_ethics_policy():
    version = live_single()
    other = RegisteredModelFactory()
    services.role_grant(
        username="elsewhere",
        roles=["ethics_officer"],
        model_name=other.name,
        actor=Actor.system("tests"),
    )
    elsewhere = Actor.for_user(UserFactory(username="elsewhere"))
    for actor in (person("ml_lead"), elsewhere, Actor.system("tests")):
        with pytest.raises(Forbidden):
            ethics_policy_update(
                model_name=version.model.name,
                fairness_limits=LIMITS,
                prohibited_features=[],
                reason="r",
                actor=actor,
            )
    assert not EthicsPolicy.objects.exists()


def test_a_policy_update_names_every_bad_field():
    version = live_single()
    with pytest.raises(InvalidInput) as refused:
        ethics_policy_update(
            model_name=version.model.name,
            fairness_limits={
                "selection_rate": {"max": 0.2},
                "fpr_ratio": {"minimum": 0.5},
                "fnr_ratio": {"min": "0.5"},
                "equalized_odds_difference": {"max": 3},
                "demographic_parity_ratio": {"min": 0.8, "max": 0.6},
            },
            prohibited_features=["race", "", 7],
            reason="  ",
            actor=ethicist(),
        )
    errors = refused.value.errors
    assert set(errors) == {
        "fairness_limits.selection_rate",
        "fairness_limits.fpr_ratio",
        "fairness_limits.fnr_ratio.min",
        "fairness_limits.equalized_odds_difference.max",
        "fairness_limits.demographic_parity_ratio",
        "prohibited_features.1",
        "prohibited_features.2",
        "reason",
    }
    assert "not a fairness aggregate" in errors["fairness_limits.selection_rate"][0]
    assert not EthicsPolicy.objects.exists()


def test_each_update_is_a_new_audited_version_and_the_old_one_stays():
    version = live_single()
    first = set_policy(version.model, limits={"fpr_ratio": {"min": 0.5}}, reason="initial")
    second = set_policy(version.model, prohibited=["ethnicity", " ethnicity "], reason="stricter")

    assert (first.version, second.version) == (1, 2)
    assert ethics_policy_current(version.model) == second
    assert second.prohibited_features == ["ethnicity"]
    first.refresh_from_db()
    assert first.fairness_limits == {"fpr_ratio": {"min": 0.5}}
    events = AuditEvent.objects.filter(action="incidents.ethics_policy_updated").order_by("seq")
    assert [e.before for e in events] == [
        None,
        {
            "version": 1,
            "values": {
                "fairness_limits": {"fpr_ratio": {"min": 0.5}},
                "prohibited_features": [],
                "scoped_attributes": [],
            },
        },
    ]
    assert events.last().after["values"]["prohibited_features"] == ["ethnicity"]
    assert events.last().actor == "the-ethicist" and events.last().reason == "stricter"
    assert audit.verify().valid


def test_a_model_without_a_policy_has_no_hard_limits():
    version = live_single()
    alert = fairness_alert(version, district={**FAIR, "fpr_ratio": 0.01})

    assert ethics_policy_current(version.model) is None
    assert ethics_check_alert(alert) is None
    assert ethics_check_model(version.model) is None
    assert not Halt.objects.exists()


# --- a fairness alert beyond a hard bound ------------------------------------------------------


def test_a_fairness_alert_beyond_a_hard_bound_halts_the_model_and_its_incident_records_it(
    enqueued, django_capture_on_commit_callbacks
):
    _, v2 = live_pair()
    model = v2.model
    set_policy(model)
    alert = fairness_alert(
        v2,
        district={**FAIR, "fpr_ratio": 0.31},
        gender={**FAIR, "equalized_odds_difference": 0.42},
    )

    with django_capture_on_commit_callbacks(execute=True):
        outcome = route_alert(alert)

    halt = active_halt(model.name)
    assert halt is not None and halt.engaged_by is None
    assert halt.engaged_by_label == "system:incidents.ethics"
    assert "fpr_ratio of 'district' on 1.1.0 is 0.31, below the hard minimum 0.5" in halt.reason
    # one alert, one incident: the fairness incident routing opened records the halt
    assert not Incident.objects.filter(kind="ethics").exists()
    incident = Incident.objects.get(kind="fairness")
    assert outcome["action"] == "opened" and outcome["incident"] == incident.pk
    assert outcome["ethics"] == {
        "model": model.name,
        "action": "joined",
        "halt": halt.pk,
        "incident": incident.pk,
        "breaches": outcome["ethics"]["breaches"],
    }
    assert (incident.severity, incident.playbook, incident.status) == ("critical", "2", "open")
    assert incident.halt == halt and incident.version == v2
    [why] = incident.events.filter(kind="decision")
    assert why.message.startswith(f"emergency halt of {model.name} engaged by system:incidents.")
    assert "equalized_odds_difference of 'gender' on 1.1.0 is 0.42, above the hard maximum 0.3" in (
        why.message
    )
    assert {
        (b["attribute"], b["metric"], b["value"], b["bound"], b["limit"])
        for b in why.data["breaches"]
    } == {
        ("district", "fpr_ratio", 0.31, "min", 0.5),
        ("gender", "equalized_odds_difference", 0.42, "max", 0.3),
    }
    assert why.data["policy_version"] == 1 and why.data["halt"] == halt.pk
    assert StepRun.objects.filter(incident=incident).exists()  # playbook 2 started
    assert incident.pk in enqueued["playbook"]
    # one event for the Ethics Officer (the alert and the halt it brought): one page, saying halt
    [page] = Notification.objects.filter(incident=incident)
    assert (page.channel, page.role, page.dedup_key, page.incident_key) == (
        "page",
        "ethics_officer",
        f"incident-{incident.pk}-page-ethics_officer",
        f"incident-{incident.pk}",
    )
    assert "EMERGENCY HALT" in page.subject
    event = AuditEvent.objects.get(action="incidents.ethics_halt")
    assert event.model_name == model.name and event.after["halt"] == halt.pk
    assert AuditEvent.objects.filter(action="halt.engaged").count() == 1
    assert audit.verify().valid


def test_a_fairness_alert_within_the_hard_bounds_halts_nothing():
    _, v2 = live_pair()
    set_policy(v2.model)
    alert = fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.55})

    outcome = route_alert(alert)

    assert "ethics" not in outcome
    assert not Halt.objects.exists() and not Incident.objects.filter(kind="ethics").exists()


def test_an_attribute_monitoring_did_not_judge_never_breaches():
    _, v2 = live_pair()
    set_policy(v2.model)
    alert = fairness_alert(
        v2, district={**FAIR, "judged": False, "n_judged_groups": 1, "fpr_ratio": 0.0}
    )

    assert ethics_check_alert(alert) is None
    assert not Halt.objects.exists()


def test_the_alert_details_stand_in_when_its_run_kept_no_per_attribute_metrics():
    _, v2 = live_pair()
    set_policy(v2.model)
    alert = alert_on(v2, "fairness", "critical")
    alert.details = {"violations": [{"attribute": "district", "metric": "fpr_ratio", "value": 0.2}]}
    alert.save(update_fields=["details"])

    outcome = ethics_check_alert(alert)

    assert outcome["action"] == "halted"
    assert outcome["breaches"][0]["attribute"] == "district"


def test_a_breach_on_a_version_that_does_not_serve_halts_nothing():
    v1, v2 = live_pair()  # v1 is in warm standby, not serving
    set_policy(v2.model)

    assert ethics_check_alert(fairness_alert(v1, district={**FAIR, "fpr_ratio": 0.1})) is None
    assert not Halt.objects.exists()


def test_a_second_breach_while_halted_engages_no_second_halt_and_no_second_incident():
    _, v2 = live_pair()
    set_policy(v2.model)
    first = ethics_check_alert(fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.2}))
    again = ethics_check_alert(fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.1}))
    beat = ethics_check_model(v2.model)

    assert first["action"] == "halted"
    assert again["action"] == beat["action"] == "already halted"
    assert again["halt"] == beat["halt"] == first["halt"]
    assert Halt.objects.count() == 1 and Incident.objects.filter(kind="ethics").count() == 1
    assert Notification.objects.filter(role="ethics_officer").count() == 1
    assert AuditEvent.objects.filter(action="incidents.ethics_halt").count() == 1


def test_a_halt_someone_engaged_already_stays_and_a_new_ethics_incident_records_the_breach():
    _, v2 = live_pair()
    set_policy(v2.model)
    manual, _ = halt_engage(scope=v2.model.name, reason="looks wrong", actor=person("ml_lead"))

    outcome = ethics_check_alert(fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.2}))

    assert outcome["action"] == "recorded" and outcome["halt"] == manual.pk
    assert Halt.objects.count() == 1
    incident = ethics_incident()
    assert incident.halt == manual
    [why] = incident.events.filter(kind="decision")
    assert "engaged by the-lead" in why.message and "stays in force" in why.message
    assert "fpr_ratio of 'district'" in why.message


def test_a_new_halt_after_a_release_joins_the_active_ethics_incident_and_pages_again():
    _, v2 = live_pair()
    set_policy(v2.model)
    first = ethics_check_alert(fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.2}))
    Halt.objects.filter(pk=first["halt"]).update(released_at="2026-03-01T00:00:00Z")

    again = ethics_check_alert(fairness_alert(v2, district={**FAIR, "fpr_ratio": 0.1}))

    assert again["action"] == "joined" and again["incident"] == first["incident"]
    assert again["halt"] != first["halt"] and active_halt(v2.model.name).pk == again["halt"]
    assert ethics_incident().halt_id == again["halt"]
    assert Notification.objects.filter(role="ethics_officer").count() == 2


# --- the serving version against the policy -----------------------------------------------------


def test_setting_a_policy_that_prohibits_a_live_feature_halts_the_model_at_once(
    django_capture_on_commit_callbacks,
):
    version = live_single()  # features f1, f2, f3
    with django_capture_on_commit_callbacks(execute=True):
        set_policy(version.model, limits={}, prohibited=["F2"], reason="f2 encodes ethnicity")

    halt = active_halt(version.model.name)
    assert halt is not None
    assert "prohibited feature 'f2' is in the feature list of 1.0.0" in halt.reason
    [why] = ethics_incident().events.filter(kind="decision")
    assert why.data["breaches"] == [{"policy_version": 1, "version": "1.0.0", "feature": "f2"}]


def test_the_latest_fairness_run_of_the_serving_version_is_what_counts():
    _, v2 = live_pair()
    set_policy(v2.model)
    breaching = fairness_run(v2, district={**FAIR, "fpr_ratio": 0.2})
    assert ethics_check_model(v2.model)["action"] == "halted"

    Halt.objects.update(released_at="2026-03-01T00:00:00Z")
    Incident.objects.update(status="resolved")
    newer = fairness_run(v2, district=FAIR)
    assert newer.window_end < breaching.window_end  # helpers count windows backwards
    MonitorRun.objects.filter(pk=newer.pk).update(window_end=breaching.window_end + timedelta(1))
    assert ethics_check_model(v2.model) is None


def test_the_beat_checks_every_model_with_a_policy_and_a_serving_version():
    _, breaching = live_pair()
    _, clean = live_pair()
    no_policy = live_single()
    set_policy(breaching.model)
    set_policy(clean.model)
    fairness_run(breaching, district={**FAIR, "demographic_parity_ratio": 0.3, "fpr_ratio": 0.4})
    fairness_run(clean, district=FAIR)
    fairness_run(no_policy, district={**FAIR, "fpr_ratio": 0.0})

    halted = ethics_check_all()

    assert [o["model"] for o in halted] == [breaching.model.name]
    assert list(Halt.objects.values_list("scope", flat=True)) == [breaching.model.name]
    assert ethics_check_all() == [{**halted[0], "action": "already halted"}]


def test_the_beat_task_wraps_the_check():
    version = live_single()
    set_policy(version.model, limits={}, prohibited=["f1"])

    [outcome] = tasks.check_ethics_limits.run()

    assert outcome["model"] == version.model.name and outcome["action"] == "halted"


# --- the API -----------------------------------------------------------------------------------


def url(name: str) -> str:
    return f"/api/v1/models/{name}/ethics-policy/"


def test_the_api_reads_no_policy_as_no_hard_limits_then_the_officer_sets_one(api_client):
    version = live_single()
    name = version.model.name
    reader = api_client("product_manager", username="pm")
    officer = api_client("ethics_officer", username="eo")

    empty = reader.get(url(name))
    assert empty.status_code == 200
    assert empty.json()["version"] is None and empty.json()["fairness_limits"] == {}

    body = {"fairness_limits": LIMITS, "prohibited_features": ["ethnicity"], "reason": "board"}
    written = officer.put(url(name), body, format="json")
    assert written.status_code == 200, written.content
    assert written.json()["version"] == 1 and written.json()["created_by"].startswith("eo")

    shown = reader.get(url(name)).json()
    assert shown["fairness_limits"] == {
        "equalized_odds_difference": {"max": 0.3},
        "fpr_ratio": {"min": 0.5},
    }
    assert shown["prohibited_features"] == ["ethnicity"] and shown["reason"] == "board"


def test_the_api_refuses_anyone_but_an_ethics_officer_and_names_bad_fields(api_client):
    version = live_single()
    name = version.model.name
    lead = api_client("ml_lead", username="lead")
    officer = api_client("ethics_officer", username="eo", model=name)

    refused = lead.put(url(name), {"fairness_limits": {}, "reason": "x"}, format="json")
    assert refused.status_code == 403

    bad = officer.put(
        url(name),
        {"fairness_limits": {"fpr_ratio": {"min": -1}, "ppv": {"max": 0.2}}, "reason": ""},
        format="json",
    )
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {
        "fairness_limits.fpr_ratio.min",
        "fairness_limits.ppv",
        "reason",
    }
    unknown = officer.put(url(name), {"reason": "x", "limits": {}}, format="json")
    assert unknown.status_code == 400 and "limits" in unknown.json()["errors"]
    assert lead.get(url("no-such-model")).status_code == 404
    assert not EthicsPolicy.objects.exists()


def test_the_api_schema_documents_the_ethics_policy_endpoint(api_client):
    schema = api_client("auditor").get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = json.loads(schema.content)["paths"]
    assert set(paths["/api/v1/models/{name}/ethics-policy/"]) >= {"get", "put"}


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def officer_login(client):
    return staff_login(client, "ethics_officer", "admin-ethicist")


def test_the_admin_writes_a_new_version_through_the_audited_service(officer_login):
    version = live_single()
    first = set_policy(version.model, limits={"fpr_ratio": {"min": 0.5}})
    change = f"/admin/incidents/ethicspolicy/{first.pk}/change/"
    assert officer_login.get(change).status_code == 200

    response = officer_login.post(
        change,
        {
            "new_fairness_limits": json.dumps({"fpr_ratio": {"min": 0.6}}),
            "new_prohibited_features": json.dumps(["ethnicity"]),
            "change_reason": "tightened",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    new = ethics_policy_current(version.model)
    assert (new.version, new.fairness_limits) == (2, {"fpr_ratio": {"min": 0.6}})
    assert response["Location"].endswith(f"/{new.pk}/change/")
    event = AuditEvent.objects.filter(action="incidents.ethics_policy_updated").last()
    assert event.actor == "admin-ethicist" and event.reason == "tightened"


def test_the_admin_names_a_bad_limit_and_refuses_anyone_else(officer_login, client):
    version = live_single()
    response = officer_login.post(
        "/admin/incidents/ethicspolicy/add/",
        {
            "model": version.model.pk,
            "new_fairness_limits": json.dumps({"fpr_ratio": {"min": 2}}),
            "new_prohibited_features": "[]",
            "change_reason": "x",
        },
    )
    assert response.status_code == 200
    assert b"fairness_limits.fpr_ratio.min: must lie between 0 and 1" in response.content
    assert not EthicsPolicy.objects.exists()

    person("ml_lead", "admin-lead")
    lead = UserFactory(username="admin-lead")
    lead.is_staff = True
    lead.save(update_fields=["is_staff"])
    client.force_login(lead)
    assert client.get("/admin/incidents/ethicspolicy/add/").status_code == 403


# --- the gateway refuses at once --------------------------------------------------------------


def test_predict_is_refused_right_after_an_ethics_halt(
    mlflow_models, api_client, gateway, django_capture_on_commit_callbacks
):
    from tests.serving.helpers import instances, live, predict

    version = live(mlflow_models, seed=3)
    name = version.model.name
    ci = api_client("ci", username="gateway-ci")
    assert predict(ci, name, instances()).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        set_policy(version.model, limits={}, prohibited=["f3"], reason="f3 proxies ethnicity")
    refused = predict(ci, name, instances(2))

    assert refused.status_code == 503
    assert refused.json()["halted"] is True and refused.json()["scope"] == name
    assert "prohibited feature 'f3'" in refused.json()["reason"]
    assert "predictions" not in refused.json()
