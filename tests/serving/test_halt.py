"""The emergency halt: engaged by one person, released by an ML Lead and an Ethics Officer."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from governance import audit, services
from governance.audit import Actor
from governance.models import AuditEvent
from serving import cache
from serving.models import Halt
from tests.serving.helpers import instances, live, predict

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def engage(client, scope, reason="ethics hard limit breached"):
    return client.post("/api/v1/halt/", {"scope": scope, "reason": reason}, format="json")


def release(client, scope, **extra):
    return client.post("/api/v1/halt/release/", {"scope": scope, **extra}, format="json")


def test_the_next_predict_after_a_committed_halt_answers_503_with_the_reason(
    mlflow_models, ci, lead, committed
):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    assert predict(ci, name, instances()).status_code == 200

    with committed():
        response = engage(lead, name, "selection rate collapsed for one district")
    assert response.status_code == 201
    refused = predict(ci, name, instances())

    assert refused.status_code == 503
    assert refused.json()["halted"] is True
    assert refused.json()["scope"] == name
    assert refused.json()["reason"] == "selection rate collapsed for one district"
    assert "predictions" not in refused.json()


def test_a_halt_is_never_bypassed_by_the_stale_cache(mlflow_models, ci, lead, committed, settings):
    from tests.serving.test_stale import corrupt, restart_gateway

    version = live(mlflow_models, seed=1)
    name = version.model.name
    rows = instances(3)
    assert predict(ci, name, rows).status_code == 200
    cache.flush()
    assert all(cache.lookup(name, ("f1", "f2", "f3"), _matrix(rows)))
    # the live model cannot serve, so without the halt these rows would be answered stale
    corrupt(version)
    settings.MLFLOW_TRACKING_URI = settings.MLFLOW_REGISTRY_URI = "http://127.0.0.1:9"
    restart_gateway()
    cache.flush()
    stale = predict(ci, name, rows).json()
    assert stale["stale"] is True and len(stale["predictions"]) == 3

    with committed():
        engage(lead, name)
    response = predict(ci, name, rows)

    assert response.status_code == 503
    assert response.json()["halted"] is True
    assert "predictions" not in response.json()


def _matrix(rows):
    import numpy as np

    return np.array([[r["f1"], r["f2"], r["f3"]] for r in rows], dtype=float)


def test_a_global_halt_stops_every_model(mlflow_models, ci, lead, committed):
    first = live(mlflow_models, seed=1)
    second = live(mlflow_models, seed=2)
    for version in (first, second):
        assert predict(ci, version.model.name, instances()).status_code == 200

    with committed():
        assert engage(lead, "global").status_code == 201

    for version in (first, second):
        response = predict(ci, version.model.name, instances())
        assert response.status_code == 503
        assert response.json()["scope"] == "global"


def test_a_model_halt_leaves_other_models_serving(mlflow_models, ci, lead, committed):
    halted = live(mlflow_models, seed=1)
    other = live(mlflow_models, seed=2)
    with committed():
        engage(lead, halted.model.name)
    assert predict(ci, halted.model.name, instances()).status_code == 503
    assert predict(ci, other.model.name, instances()).status_code == 200


def test_release_needs_both_an_ml_lead_and_an_ethics_officer(
    mlflow_models, ci, api_client, lead, ethicist, committed
):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    oncall = api_client("oncall", username="pager")
    with committed():
        assert engage(oncall, name).status_code == 201

    with committed():
        first = release(lead, name, reason="root cause fixed")
    assert first.status_code == 200
    assert first.json()["released"] is False
    assert first.json()["waiting_for"] == ["ethics_officer"]
    assert predict(ci, name, instances()).status_code == 503

    with committed():
        second = release(ethicist, name, reason="reviewed the district data")
    assert second.json()["released"] is True
    assert second.json()["active"] is False
    assert predict(ci, name, instances()).status_code == 200


def test_the_engager_may_be_one_of_the_two_approvers(mlflow_models, ci, lead, ethicist, committed):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    with committed():
        engage(ethicist, name)
        release(ethicist, name)
        assert release(lead, name).json()["released"] is True
    assert predict(ci, name, instances()).status_code == 200


def test_one_person_cannot_fill_both_release_roles(mlflow_models, api_client, lead):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    both = api_client("ml_lead", "ethics_officer", username="both-hats")
    engage(lead, name)

    assert release(both, name).status_code == 200
    again = release(both, name, role="ethics_officer")

    assert again.status_code == 409
    assert "another person" in again.json()["detail"]
    assert Halt.objects.get(scope=name).active


def test_two_ml_leads_do_not_release_a_halt(mlflow_models, api_client, lead):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    engage(lead, name)
    assert release(lead, name).status_code == 200
    other_lead = api_client("ml_lead", username="second-lead")

    response = release(other_lead, name)

    assert response.status_code == 409
    assert "waits for ethics_officer" in response.json()["detail"]


def test_release_without_an_engaged_halt_is_409(mlflow_models, lead):
    version = live(mlflow_models, seed=1)
    response = release(lead, version.model.name)
    assert response.status_code == 409
    assert "no halt is engaged" in response.json()["detail"]


def test_engaging_twice_returns_the_halt_in_force(mlflow_models, lead, ethicist):
    version = live(mlflow_models, seed=1)
    assert engage(lead, version.model.name, "first").status_code == 201
    again = engage(ethicist, version.model.name, "second")
    assert again.status_code == 200
    assert again.json()["reason"] == "first"
    assert Halt.objects.filter(scope=version.model.name).count() == 1


@pytest.mark.parametrize("role", ["ci", "ml_engineer", "product_manager", "auditor"])
def test_roles_without_halt_may_not_engage(mlflow_models, api_client, role):
    version = live(mlflow_models, seed=1)
    response = engage(api_client(role), version.model.name)
    assert response.status_code == 403
    assert not Halt.objects.exists()


def test_oncall_may_engage_but_not_approve_the_release(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    oncall = api_client("oncall", username="pager")
    assert engage(oncall, version.model.name).status_code == 201
    assert release(oncall, version.model.name).status_code == 403


def test_a_per_model_oncall_may_halt_that_model_but_not_all(mlflow_models, api_client):
    version = live(mlflow_models, seed=1)
    oncall = api_client("oncall", model=version.model.name, username="model-pager")
    assert engage(oncall, "global").status_code == 403
    assert engage(oncall, version.model.name).status_code == 201


def test_halting_an_unknown_model_is_404(lead, db):
    assert engage(lead, "no-such-model").status_code == 404


def test_a_halt_needs_a_reason(mlflow_models, lead):
    version = live(mlflow_models, seed=1)
    response = engage(lead, version.model.name, "")
    assert response.status_code == 400


def test_engaging_approving_and_releasing_are_audited(mlflow_models, lead, ethicist):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    engage(lead, name, "fairness breach")
    release(lead, name, reason="fixed")
    release(ethicist, name, reason="checked")

    actions = list(
        AuditEvent.objects.filter(action__startswith="halt.").values_list("action", "actor")
    )
    assert actions == [
        ("halt.engaged", actions[0][1]),
        ("halt.release_approved", actions[1][1]),
        ("halt.release_approved", actions[2][1]),
        ("halt.released", actions[3][1]),
    ]
    assert actions[0][1].startswith("lead") and actions[3][1].startswith("ethicist")
    assert audit.verify().valid


def test_the_halt_list_shows_halts_in_force(mlflow_models, lead):
    version = live(mlflow_models, seed=1)
    engage(lead, version.model.name, "drill")
    body = lead.get("/api/v1/halt/").json()
    assert [(h["scope"], h["waiting_for"]) for h in body] == [
        (version.model.name, ["ml_lead", "ethics_officer"])
    ]


def test_the_management_command_engages_and_releases_for_when_the_ui_is_down(
    mlflow_models, ci, committed
):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    services.role_grant(username="cli-lead", roles=["ml_lead"], actor=SYSTEM)
    services.role_grant(username="cli-ethics", roles=["ethics_officer"], actor=SYSTEM)

    with committed():
        call_command(
            "halt", name, "--reason", "web UI down, stopping inference", "--user", "cli-lead"
        )
    assert predict(ci, name, instances()).status_code == 503

    with committed():
        call_command("halt", name, "--release", "--user", "cli-lead")
        call_command("halt", name, "--release", "--user", "cli-ethics")
    assert predict(ci, name, instances()).status_code == 200
    assert AuditEvent.objects.filter(action="halt.released").count() == 1


def test_the_management_command_checks_the_users_roles(mlflow_models):
    version = live(mlflow_models, seed=1)
    services.role_grant(username="cli-pm", roles=["product_manager"], actor=SYSTEM)
    with pytest.raises(CommandError, match="halt"):
        call_command("halt", version.model.name, "--reason", "x", "--user", "cli-pm")
    with pytest.raises(CommandError, match="no active user"):
        call_command("halt", version.model.name, "--reason", "x", "--user", "nobody-here")


def test_the_admin_engages_a_halt_and_approves_its_release(mlflow_models, client, ci, committed):
    version = live(mlflow_models, seed=1)
    name = version.model.name
    services.role_grant(username="admin-lead", roles=["ml_lead"], actor=SYSTEM)
    services.role_grant(username="admin-ethics", roles=["ethics_officer"], actor=SYSTEM)
    from django.contrib.auth import get_user_model

    users = get_user_model().objects
    client.force_login(users.get(username="admin-lead"))

    with committed():
        response = client.post(
            "/admin/serving/halt/add/", {"scope": name, "reason": "from the admin"}
        )
    assert response.status_code == 302, response.content
    halt = Halt.objects.get(scope=name)
    assert predict(ci, name, instances()).status_code == 503

    for username in ("admin-lead", "admin-ethics"):
        client.force_login(users.get(username=username))
        with committed():
            client.post(
                "/admin/serving/halt/",
                {"action": "approve_release", "_selected_action": [halt.pk]},
            )
    halt.refresh_from_db()
    assert not halt.active
    assert predict(ci, name, instances()).status_code == 200


def test_the_admin_add_form_refuses_people_without_halt(mlflow_models, client):
    live(mlflow_models, seed=1)
    services.role_grant(username="admin-pm", roles=["product_manager"], actor=SYSTEM)
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.get(username="admin-pm"))
    assert client.get("/admin/serving/halt/add/").status_code == 403
