"""The monitoring runs and alerts API, and the admin's policy editing through the service."""

from __future__ import annotations

import json

import pytest
from django.contrib import admin
from django.urls import include, path

from governance.audit import Actor
from governance.models import AuditEvent, Stage
from governance.policies import policy_in_force
from monitoring import runs
from monitoring.models import Alert, MonitoringPolicy, MonitorRun, RunStatus
from tests.api_contract import RESPONSE_FIELDS
from tests.factories import UserFactory
from tests.monitoring.test_checks import synthetic
from tests.monitoring.test_runs import alert_on, create, live, put_window

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# Until config.urls includes monitoring.run_urls: the API under /api/v1/ as the project mounts it.
urlpatterns = [
    path("api/v1/", include("monitoring.run_urls")),
    path("api/v1/", include("governance.api.urls")),
    path("admin/", admin.site.urls),
]

RUNS = "/api/v1/monitoring/runs/"
ALERTS = "/api/v1/alerts/"


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path


@pytest.fixture
def enqueued(monkeypatch):
    sent: list[int] = []

    def record(name, args=(), kwargs=None, **options):
        if name == "monitoring.execute_run":
            sent.append(args[0])
        return ""

    monkeypatch.setattr("platform_core.tasking.send", record)
    return sent


# ---------------------------------------------------------------------------------------------
# POST /monitoring/runs/
# ---------------------------------------------------------------------------------------------


def test_starting_runs_answers_202_with_the_first_run_id(
    api_client, enqueued, django_capture_on_commit_callbacks
):
    version = live()
    client = api_client("ml_lead")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            RUNS, {"model": version.model.name, "checks": ["data_drift", "fairness"]}
        )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert [r["check"] for r in body["runs"]] == ["data_drift", "fairness"]
    assert body["id"] == body["runs"][0]["id"]
    assert all(r["status"] == "pending" for r in body["runs"])
    assert enqueued == [r["id"] for r in body["runs"]]
    run = MonitorRun.objects.get(pk=body["id"])
    assert run.version == version and run.trigger == "api"
    assert (run.window_end - run.window_start).days == 7
    event = AuditEvent.objects.get(action="monitoring.runs_started")
    assert event.after["runs"] == enqueued and event.actor.startswith("ml_lead-user")


def test_starting_runs_without_checks_runs_all_six_on_the_named_version(api_client, enqueued):
    version = live(Stage.VALIDATION)  # on-demand runs work in any stage
    response = api_client("ethics_officer").post(
        RUNS, {"model": version.model.name, "version": version.version}
    )
    assert response.status_code == 202
    assert sorted(r["check"] for r in response.json()["runs"]) == sorted(
        [
            "data_drift",
            "concept_drift",
            "label_drift",
            "prediction_drift",
            "fairness",
            "calibration",
        ]
    )


def test_a_product_manager_may_not_start_runs(api_client):
    version = live()
    response = api_client("product_manager").post(RUNS, {"model": version.model.name})
    assert response.status_code == 403
    assert "start_runs" in response.json()["detail"]
    assert not MonitorRun.objects.exists()


def test_starting_runs_refuses_unknown_checks_and_fields(api_client):
    version = live()
    client = api_client("ml_lead")
    response = client.post(RUNS, {"model": version.model.name, "checks": ["vibes"]})
    assert response.status_code == 400 and "checks" in response.json()["errors"]
    response = client.post(RUNS, {"model": version.model.name, "window": "1d"})
    assert response.status_code == 400 and "window" in response.json()["errors"]


def test_starting_runs_on_a_model_without_a_live_version_needs_a_version(api_client):
    version = live(Stage.STAGING)
    response = api_client("ml_lead").post(RUNS, {"model": version.model.name})
    assert response.status_code == 409
    assert "no live version" in response.json()["detail"]


def test_starting_runs_on_an_unknown_model_is_404(api_client):
    assert api_client("ml_lead").post(RUNS, {"model": "nope"}).status_code == 404


# ---------------------------------------------------------------------------------------------
# GET /monitoring/runs/{id}/ and the list
# ---------------------------------------------------------------------------------------------


def test_run_detail_shows_status_window_policy_versions_and_per_feature_numbers(api_client):
    version = live()
    put_window(version, synthetic(2_000, seed=50, start="2026-03-02", days=5))
    run = runs.run_execute(create(version, "data_drift").pk)
    response = api_client("product_manager").get(f"{RUNS}{run.pk}/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded" and body["reason"] == ""
    assert body["window_start"].startswith("2026-03-01") and body["window_end"].startswith(
        "2026-03-08"
    )
    assert body["policy_version"] == 1 and body["validation_policy_version"] == 1
    assert body["model"] == version.model.name and body["check"] == "data_drift"
    for feature in ("f1", "f2", "f3"):
        assert isinstance(body["metrics"]["features"][feature]["psi"], float)
    assert body["alert"] is None


def test_run_detail_shows_each_groups_fpr_and_fnr(api_client):
    version = live()
    put_window(version, synthetic(6_000, seed=51, start="2026-03-02", days=5, unfair_fpr=0.3))
    run = runs.run_execute(create(version, "fairness").pk)
    body = api_client("product_manager").get(f"{RUNS}{run.pk}/").json()
    groups = body["metrics"]["attributes"]["area"]["groups"]
    for group in ("north", "south"):
        assert isinstance(groups[group]["fpr"], float)
        assert isinstance(groups[group]["fnr"], float)
    assert body["alert"] == Alert.objects.get().pk


def test_a_failed_run_shows_its_reason(api_client):
    version = live(profile=False)
    run = runs.run_execute(create(version, "prediction_drift").pk)
    body = api_client("auditor").get(f"{RUNS}{run.pk}/").json()
    assert body["status"] == "failed" and "no reference profile" in body["reason"]


def test_run_detail_is_404_for_a_model_the_caller_may_not_read(api_client):
    version = live()
    other = live()
    run = create(version, "data_drift")
    client = api_client("ml_engineer", model=other.model.name)
    assert client.get(f"{RUNS}{run.pk}/").status_code == 404
    assert client.get(f"{RUNS}{create(other, 'data_drift').pk}/").status_code == 200


def test_run_list_filters_by_model_check_and_status(api_client):
    version, other = live(), live()
    done = runs.run_execute(create(version, "prediction_drift").pk)  # no data: skipped
    create(version, "data_drift")
    create(other, "data_drift")
    client = api_client("auditor")
    body = client.get(RUNS, {"model": version.model.name}).json()
    assert body["count"] == 2 and "metrics" not in body["results"][0]
    body = client.get(RUNS, {"model": version.model.name, "check": "data_drift"}).json()
    assert [r["check"] for r in body["results"]] == ["data_drift"]
    body = client.get(RUNS, {"status": done.status}).json()
    assert [r["id"] for r in body["results"]] == [done.pk]
    assert client.get(RUNS, {"status": "happy"}).status_code == 400
    assert client.get(RUNS, {"status": RunStatus.PENDING}).json()["count"] == 2


# ---------------------------------------------------------------------------------------------
# GET /alerts/
# ---------------------------------------------------------------------------------------------


def test_alert_list_has_the_shape_of_the_specification(api_client):
    version = live()
    put_window(version, synthetic(2_000, seed=52, start="2026-03-02", days=5, shift={"f2": 1.0}))
    runs.run_execute(create(version, "data_drift").pk)
    response = api_client("product_manager").get(ALERTS, {"model": version.model.name})
    assert response.status_code == 200
    (alert,) = response.json()["results"]
    assert list(alert) == list(RESPONSE_FIELDS["Alert"])
    assert alert["model"] == version.model.name and alert["version"] == version.version
    assert (alert["check"], alert["severity"], alert["feature"]) == ("data_drift", "medium", "f2")
    assert alert["metric"] == "psi" and alert["threshold"] == 0.2 and alert["value"] > 0.2
    assert alert["status"] == "open"


def test_alert_list_filters_by_severity_and_status_and_shows_null_feature(api_client):
    version = live()
    alert_on(version, "concept_drift", "high")
    alert_on(version, "fairness", "critical")
    client = api_client("auditor")
    body = client.get(ALERTS, {"model": version.model.name, "severity": "high"}).json()
    assert [a["check"] for a in body["results"]] == ["concept_drift"]
    assert body["results"][0]["feature"] is None
    assert client.get(ALERTS, {"status": "open"}).json()["count"] == 2
    assert client.get(ALERTS, {"severity": "apocalyptic"}).status_code == 400
    one = body["results"][0]["id"]
    assert client.get(f"{ALERTS}{one}/").json()["id"] == one


def test_alerts_of_unreadable_models_are_not_listed(api_client):
    version, other = live(), live()
    alert_on(version, "fairness", "critical")
    alert_on(other, "fairness", "critical")
    client = api_client("domain_sme", model=other.model.name)
    body = client.get(ALERTS).json()
    assert [a["model"] for a in body["results"]] == [other.model.name]


# ---------------------------------------------------------------------------------------------
# Admin: policies change only through the audited service
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def lead_client(client):
    from governance import services

    services.role_grant(username="the-lead", roles=["ml_lead"], actor=Actor.system("tests"))
    user = UserFactory(username="the-lead")
    client.force_login(user)
    return client


def test_admin_policy_change_creates_a_new_audited_version(lead_client):
    version = live()
    policy = policy_in_force("monitoring", version.model, Actor.system("tests"))
    url = f"/admin/monitoring/monitoringpolicy/{policy.pk}/change/"
    assert lead_client.get(url).status_code == 200
    settings = {**policy.values, "psi_max": 0.3}
    response = lead_client.post(
        url, {"new_settings": json.dumps(settings), "change_comment": "seasonal data"}
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    new = MonitoringPolicy.objects.get(model=version.model, version=2)
    assert new.values["psi_max"] == 0.3 and new.reason == "seasonal data"
    assert response["Location"].endswith(f"/{new.pk}/change/")
    event = AuditEvent.objects.filter(action="monitoring_policy.updated").order_by("seq").last()
    assert event.actor == "the-lead" and event.after["values"]["psi_max"] == 0.3
    policy.refresh_from_db()
    assert policy.values["psi_max"] == 0.2  # the old version is untouched


def test_admin_policy_change_refuses_a_bad_value_naming_it(lead_client):
    version = live()
    policy = policy_in_force("monitoring", version.model, Actor.system("tests"))
    response = lead_client.post(
        f"/admin/monitoring/monitoringpolicy/{policy.pk}/change/",
        {"new_settings": json.dumps({**policy.values, "min_rows": 0}), "change_comment": "x"},
    )
    assert response.status_code == 200
    assert b"min_rows: must be a whole number of at least 1" in response.content
    assert MonitoringPolicy.objects.filter(model=version.model).count() == 1


def test_admin_lists_runs_and_alerts_read_only(lead_client):
    version = live()
    alert = alert_on(version, "fairness", "critical")
    assert lead_client.get("/admin/monitoring/monitorrun/").status_code == 200
    assert (
        lead_client.get(f"/admin/monitoring/monitorrun/{alert.run_id}/change/").status_code == 200
    )
    assert lead_client.get(f"/admin/monitoring/alert/{alert.pk}/change/").status_code == 200
    assert lead_client.get("/admin/monitoring/referenceprofile/").status_code == 200
    assert lead_client.get("/admin/monitoring/alert/add/").status_code == 403


def test_admin_policy_add_creates_the_next_version_for_the_chosen_model(lead_client):
    version = live()
    settings = {
        **policy_in_force("monitoring", version.model, Actor.system("tests")).values,
        "ece_max": 0.08,
    }
    response = lead_client.post(
        "/admin/monitoring/monitoringpolicy/add/",
        {
            "model": version.model.pk,
            "new_settings": json.dumps(settings),
            "change_comment": "noisy labels",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    new = MonitoringPolicy.objects.get(model=version.model, version=2)
    assert new.values["ece_max"] == 0.08


def test_admin_policy_editing_needs_the_ml_lead(client):
    version = live()
    policy = policy_in_force("monitoring", version.model, Actor.system("tests"))
    from governance import services

    services.role_grant(username="pm", roles=["product_manager"], actor=Actor.system("tests"))
    client.force_login(UserFactory(username="pm"))
    url = f"/admin/monitoring/monitoringpolicy/{policy.pk}/change/"
    assert client.get(url).status_code == 200  # may look
    response = client.post(url, {"new_settings": "{}", "change_comment": "x"})
    assert response.status_code == 403
    assert client.get("/admin/monitoring/monitoringpolicy/add/").status_code == 403
