"""The audit API: the filterable log, chain verification and a version's history."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import time_machine
from django.db import transaction

from governance import audit
from governance.audit import Actor
from governance.models import Approval, AuditEvent, Evaluation
from registry.models import RegisteredModel
from tests.api_contract import RESPONSE_FIELDS
from tests.governance.test_audit import _tamper

pytestmark = pytest.mark.django_db

LIST = "/api/v1/audit/"
VERIFY = "/api/v1/audit/verify/"


def _record(action: str, *, when: datetime | None = None, actor: Actor | None = None, **kwargs):
    moment = when or datetime(2025, 6, 1, tzinfo=UTC)
    with time_machine.travel(moment, tick=False), transaction.atomic():
        return audit.record(actor=actor or Actor.system("tests"), action=action, **kwargs)


def _results(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()["results"]


@pytest.fixture
def auditor(api_client):
    return api_client("auditor")


# --- the list ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ci", "product_manager", "ml_engineer", "oncall"])
def test_roles_without_read_audit_are_refused(api_client, role):
    response = api_client(role).get(LIST)
    assert response.status_code == 403
    assert "read_audit" in response.json()["detail"]


@pytest.mark.parametrize("role", ["auditor", "ml_lead", "ethics_officer"])
def test_roles_with_read_audit_read_the_log(api_client, role):
    assert api_client(role).get(LIST).status_code == 200


def test_anonymous_callers_are_refused(client):
    assert client.get(LIST).status_code in (401, 403)


def test_events_come_oldest_first_with_every_field(auditor):
    _record("test.first", object_id="1", after={"a": 1})
    _record("test.second", object_id="2", before={"a": 1}, after={"a": 2}, reason="why")
    events = _results(auditor.get(LIST))
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    last = events[-1]
    assert list(last) == list(RESPONSE_FIELDS["AuditEvent"])
    assert last["action"] == "test.second" and last["reason"] == "why"
    assert last["before"] == {"a": 1} and last["after"] == {"a": 2}
    assert last["prev_hash"] == events[-2]["hash"]


def test_filter_by_action_model_and_object(auditor):
    _record(
        "version.registered", object_type="registry.ModelVersion", object_id="7", model_name="a"
    )
    _record(
        "version.registered", object_type="registry.ModelVersion", object_id="8", model_name="b"
    )
    _record("lifecycle.promote", object_type="governance.Lifecycle", object_id="7", model_name="a")

    by_action = _results(auditor.get(LIST, {"action": "version.registered"}))
    assert [e["object_id"] for e in by_action] == ["7", "8"]
    by_model = _results(auditor.get(LIST, {"model": "a"}))
    assert [e["action"] for e in by_model] == ["version.registered", "lifecycle.promote"]
    by_object = _results(
        auditor.get(LIST, {"object_type": "registry.ModelVersion", "object_id": "8"})
    )
    assert [e["model"] for e in by_object] == ["b"]
    combined = _results(auditor.get(LIST, {"model": "a", "action": "lifecycle.promote"}))
    assert len(combined) == 1


def test_filter_by_actor_matches_the_users_tokens_too(auditor, django_user_model):
    ana = django_user_model.objects.create(username="ana")
    _record("test.by_hand", actor=Actor.for_user(ana), object_id="1")
    _record("test.by_token", actor=Actor.for_user(ana, token_name="ci-main"), object_id="2")
    _record("test.by_anabel", actor=Actor(label="anabel"), object_id="3")
    _record("test.by_task", actor=Actor.system("beat"), object_id="4")

    assert [e["action"] for e in _results(auditor.get(LIST, {"actor": "ana"}))] == [
        "test.by_hand",
        "test.by_token",
    ]
    by_token = _results(auditor.get(LIST, {"actor": "ana (token ci-main)"}))
    assert [e["action"] for e in by_token] == ["test.by_token"]
    assert [e["action"] for e in _results(auditor.get(LIST, {"actor": "system:beat"}))] == [
        "test.by_task"
    ]


def test_since_is_inclusive_and_until_exclusive(auditor):
    for day in (1, 2, 3):
        _record(f"test.day{day}", when=datetime(2025, 3, day, 12, tzinfo=UTC), object_id="x")
    window = {"since": "2025-03-02T12:00:00Z", "until": "2025-03-03T12:00"}
    assert [e["action"] for e in _results(auditor.get(LIST, window))] == ["test.day2"]
    by_date = _results(auditor.get(LIST, {"since": "2025-03-02", "object_id": "x"}))
    assert [e["action"] for e in by_date] == ["test.day2", "test.day3"]
    offset = _results(auditor.get(LIST, {"until": "2025-03-02T14:00:00+02:00", "object_id": "x"}))
    assert [e["action"] for e in offset] == ["test.day1"]
    unencoded = _results(auditor.get(LIST + "?until=2025-03-02T14:00:00+02:00&object_id=x"))
    assert [e["action"] for e in unencoded] == ["test.day1"]


@pytest.mark.parametrize("param", ["since", "until"])
def test_a_bad_datetime_is_a_400_naming_the_parameter(auditor, param):
    response = auditor.get(LIST, {param: "last tuesday"})
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "Invalid input." and list(body["errors"]) == [param]
    assert "ISO 8601" in body["errors"][param][0]


def test_until_before_since_is_a_400(auditor):
    response = auditor.get(LIST, {"since": "2025-03-02", "until": "2025-03-01"})
    assert response.status_code == 400 and "until" in response.json()["errors"]


def test_the_log_is_paginated_with_limit_and_offset(auditor):
    for i in range(7):
        _record("test.page", object_id=str(i))
    first = auditor.get(LIST, {"action": "test.page", "limit": 3}).json()
    assert first["count"] == 7 and first["next"] and first["previous"] is None
    assert [e["object_id"] for e in first["results"]] == ["0", "1", "2"]
    last = auditor.get(LIST, {"action": "test.page", "limit": 3, "offset": 6}).json()
    assert [e["object_id"] for e in last["results"]] == ["6"] and last["next"] is None


def test_a_per_model_grant_reads_only_that_models_events(api_client):
    RegisteredModel.objects.create(name="hotspot")
    RegisteredModel.objects.create(name="other")
    lead = api_client("ml_lead", model="hotspot")
    _record("test.mine", model_name="hotspot", object_id="1")
    _record("test.theirs", model_name="other", object_id="2")
    _record("test.global", object_id="3")
    events = _results(lead.get(LIST))
    assert {e["model"] for e in events} == {"hotspot"}
    assert "test.mine" in {e["action"] for e in events}
    assert lead.get(VERIFY).status_code == 403  # the whole chain spans every model


# --- verification -----------------------------------------------------------------------


def test_verify_reports_an_intact_chain_and_checkpoints_its_head(auditor):
    _record("test.one", object_id="1")
    head = AuditEvent.objects.order_by("-seq").first()
    body = auditor.get(VERIFY).json()
    assert body["valid"] is True and body["events"] == AuditEvent.objects.count()
    assert body["first_broken"] is None and body["first_bad_seq"] is None
    assert "problem" not in body and body["refused_checkpoints"] == []
    assert body["head"] == {"seq": head.seq, "link": head.hash}
    assert body["checkpoint_written"] is True
    assert body["checkpoint"]["seq"] == head.seq and body["checkpoint"]["link"] == head.hash
    assert body["previous_verification"] is None

    again = auditor.get(VERIFY).json()
    assert again["checkpoint_written"] is False  # the head has not moved: nothing new to sign
    assert again["checkpoint"]["name"] == body["checkpoint"]["name"]
    assert again["previous_verification"]["valid"] is True
    assert again["previous_verification"]["at"] == body["verified_at"]


def test_verify_api_and_command_report_the_same_break(auditor):
    from io import StringIO

    from django.core.management import CommandError, call_command

    _record("test.one", object_id="1")
    target = _record("test.two", object_id="2")
    _tamper("UPDATE governance_auditevent SET reason = 'rewritten' WHERE id = %s", [target.id])
    body = auditor.get(VERIFY).json()
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("verify_audit", stdout=StringIO(), stderr=err)
    assert body["valid"] is False and body["first_bad_seq"] == target.seq
    assert f"BROKEN at {body['problem']}" in err.getvalue()
    assert body["problem"].startswith(f"seq {target.seq} (event id {target.id}): ")
    assert body["checkpoint_written"] is False


def test_verify_names_the_first_broken_event(auditor):
    target = _record("test.one", object_id="1")
    _record("test.two", object_id="2")
    _tamper("UPDATE governance_auditevent SET reason = 'rewritten' WHERE id = %s", [target.id])
    body = auditor.get(VERIFY).json()
    assert body["valid"] is False and body["first_broken"] == target.id
    assert "edited" in body["problem"]


@pytest.mark.parametrize("role", ["ci", "product_manager"])
def test_verify_needs_read_audit(api_client, role):
    assert api_client(role).get(VERIFY).status_code == 403


# --- a version's history ----------------------------------------------------------------


def _history(client, name: str, version: str):
    return client.get(f"/api/v1/models/{name}/versions/{version}/history/")


@pytest.fixture
def registered(api_client, version_body):
    """A version registered over the API by CI, as a pipeline would."""
    ci = api_client("ci")
    assert ci.post("/api/v1/models/", {"name": "hotspot"}).status_code == 201
    response = ci.post("/api/v1/models/hotspot/versions/", version_body("1.0.0"))
    assert response.status_code == 201, response.content
    from registry.models import ModelVersion

    return ci, ModelVersion.objects.select_related("lifecycle").get(
        model__name="hotspot", version="1.0.0"
    )


def test_history_of_a_registered_version_starts_with_its_registration(registered):
    ci, _ = registered
    events = _results(_history(ci, "hotspot", "1.0.0"))
    assert events[0]["action"] == "version.registered"
    assert events[0]["actor"].startswith("ci-user") and events[0]["model"] == "hotspot"
    assert events[0]["after"]["stage"] == "development"


def test_history_gathers_lifecycle_approval_and_evaluation_events_oldest_first(
    registered, engineer
):
    ci, version = registered
    evaluation = Evaluation.objects.create(
        version=version,
        kind="unit_tests",
        passed=True,
        report={"passed": True},
        evidence_digest="sha256:" + "1" * 64,
        created_by="ci",
    )
    approval = Approval.objects.create(
        version=version,
        transition="submit_for_validation",
        role="ml_engineer",
        user=engineer,
        decision="approve",
        artifact_digest=version.artifact_digest,
        evidence_digest="e" * 64,
    )
    _record("evaluation.recorded", obj=evaluation, model_name="hotspot")
    _record("approval.approved", obj=approval, model_name="hotspot")
    _record("lifecycle.submit_for_validation", obj=version.lifecycle, model_name="hotspot")
    _record("version.other", object_type="registry.ModelVersion", object_id=str(version.pk + 99))
    _record("other.lifecycle", object_type="governance.Lifecycle", object_id="99999")

    actions = [e["action"] for e in _results(_history(ci, "hotspot", "1.0.0"))]
    assert actions == [
        "version.registered",
        "evaluation.recorded",
        "approval.approved",
        "lifecycle.submit_for_validation",
    ]


def test_history_is_readable_by_any_reader_of_the_model(registered, api_client):
    assert _history(api_client("product_manager"), "hotspot", "1.0.0").status_code == 200
    assert _history(api_client(), "hotspot", "1.0.0").status_code == 403


def test_history_of_an_unknown_version_is_a_404(registered):
    ci, _ = registered
    response = _history(ci, "hotspot", "9.9.9")
    assert response.status_code == 404 and "9.9.9" in response.json()["detail"]


# --- documentation ----------------------------------------------------------------------


def test_openapi_documents_the_audit_endpoints(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    listed = {p["name"] for p in paths["/api/v1/audit/"]["get"]["parameters"]}
    assert {"action", "model", "actor", "object_type", "object_id", "since", "until"} <= listed
    assert {"limit", "offset"} <= listed
    assert "/api/v1/audit/verify/" in paths
    assert "/api/v1/models/{name}/versions/{version}/history/" in paths
    assert "AuditVerification" in schema["components"]["schemas"]
