"""Versioned policies: one schema per kind, one publishing service, reads that never write."""

from __future__ import annotations

import json

import pytest

from governance.audit import Actor
from governance.models import AuditEvent, ValidationPolicy
from governance.policies import policy_current, policy_in_force, policy_publish, policy_values
from incidents.models import EthicsPolicy
from monitoring.models import MonitoringPolicy
from platform_core.errors import Conflict, InvalidInput
from tests.concurrency import race
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import (
    live_and_staged,
    new_version,
    person,
    sign_promotion,
    staff_login,
    step,
    to_production_first,
)

SYSTEM = Actor.system("tests")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"fpr_ratio_min": 5}, "fpr_ratio_min", "must lie between 0 and 1"),
        ({"auc_min": -0.1}, "auc_min", "must lie between 0 and 1"),
        ({"min_group_size": 0}, "min_group_size", "must be a whole number of at least 1"),
        ({"shadow_days": 2.5}, "shadow_days", "must be a whole number of at least 1"),
        ({"ece_max": "low"}, "ece_max", "must be a number"),
        ({"shadow_ks_pvalue_min": 0}, "shadow_ks_pvalue_min", "must lie strictly between 0 and 1"),
        ({"auc_minimum": 0.8}, "auc_minimum", "not a validation policy setting"),
    ],
)
def test_every_validation_value_is_checked_and_the_error_names_the_field(values, field, message):
    model = RegisteredModelFactory()
    with pytest.raises(InvalidInput) as refused:
        policy_publish("validation", model, values, SYSTEM)
    assert set(refused.value.errors) == {field}
    assert message in refused.value.errors[field][0]
    assert not ValidationPolicy.objects.exists()


@pytest.mark.django_db
def test_reading_the_current_policy_of_each_kind_writes_no_row():
    version = new_version("1.0.0")
    model = version.model
    for kind, cls in (
        ("validation", ValidationPolicy),
        ("monitoring", MonitoringPolicy),
        ("ethics", EthicsPolicy),
    ):
        current = policy_current(kind, model)
        assert current.pk is None and current.version == 0
        assert policy_values(kind, model) == cls.schema.defaults()
    to_production_first(version)  # the lifecycle conditions read the shadow period
    assert not ValidationPolicy.objects.exists()
    assert not MonitoringPolicy.objects.exists()
    assert not EthicsPolicy.objects.exists()


@pytest.mark.django_db
def test_publishing_merges_over_the_current_version_and_audits_it():
    model = RegisteredModelFactory()
    first = policy_publish("validation", model, {"auc_min": 0.8}, SYSTEM, reason="stricter")
    second = policy_publish("validation", model, {"ece_max": 0.04}, SYSTEM)
    assert (first.version, second.version) == (1, 2)
    assert second.values == {**ValidationPolicy.schema.defaults(), "auc_min": 0.8, "ece_max": 0.04}
    events = AuditEvent.objects.filter(action="validation_policy.updated").order_by("seq")
    assert [e.before and e.before["version"] for e in events] == [None, 1]
    assert events.first().reason == "stricter"


@pytest.mark.django_db
def test_shadow_days_come_from_the_validation_policy():
    v1, v2 = live_and_staged("1.1.0")
    sign_promotion(v2)
    with pytest.raises(Conflict) as default:
        step(v2, "promote", actor=person("ci"))
    assert any("the 7-day shadow period ends" in r for r in default.value.reasons)
    policy_publish("validation", v1.model, {"shadow_days": 3}, SYSTEM, reason="low risk")
    with pytest.raises(Conflict) as shorter:
        step(v2, "promote", actor=person("ci"))
    assert any("the 3-day shadow period ends" in r for r in shorter.value.reasons)


@pytest.fixture
def lead_client(client):
    return staff_login(client, "ml_lead", "the-lead")


@pytest.mark.django_db
def test_the_ml_lead_edits_the_validation_policy_in_the_admin_through_the_service(lead_client):
    model = new_version("1.0.0").model
    policy = policy_in_force("validation", model, SYSTEM)
    url = f"/admin/governance/validationpolicy/{policy.pk}/change/"
    assert lead_client.get(url).status_code == 200

    bad = lead_client.post(
        url,
        {"new_settings": json.dumps({**policy.values, "fpr_ratio_min": 5}), "change_comment": "x"},
    )
    assert bad.status_code == 200
    assert b"fpr_ratio_min: must lie between 0 and 1" in bad.content
    assert ValidationPolicy.objects.filter(model=model).count() == 1

    good = lead_client.post(
        url,
        {
            "new_settings": json.dumps({**policy.values, "fpr_ratio_min": 0.6}),
            "change_comment": "small groups",
        },
    )
    assert good.status_code == 302, good.content.decode()[:2000]
    new = policy_current("validation", model)
    assert new.version == 2 and new.values["fpr_ratio_min"] == 0.6
    assert new.reason == "small groups" and new.created_by == "the-lead"
    event = AuditEvent.objects.filter(action="validation_policy.updated").order_by("seq").last()
    assert event.actor == "the-lead" and event.after["values"]["fpr_ratio_min"] == 0.6


@pytest.mark.django_db
def test_only_the_ml_lead_of_the_model_may_edit_its_validation_policy(client):
    model = new_version("1.0.0").model
    policy = policy_in_force("validation", model, SYSTEM)
    staff_login(client, "product_manager", "the-pm")
    url = f"/admin/governance/validationpolicy/{policy.pk}/change/"
    assert client.get(url).status_code == 200  # may look
    response = client.post(url, {"new_settings": "{}", "change_comment": "x"})
    assert response.status_code == 403
    assert client.get("/admin/governance/validationpolicy/add/").status_code == 403


# --- races on PostgreSQL ------------------------------------------------------------------------

THREADS = 8


def _race(target) -> list[BaseException]:
    return race(target, THREADS).errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_publishers_never_write_the_same_version():
    model = RegisteredModelFactory()
    errors = _race(
        lambda i: policy_publish("monitoring", model, {"min_rows": 500 + i}, Actor.system(f"t{i}"))
    )
    assert errors == []
    versions = sorted(
        MonitoringPolicy.objects.filter(model=model).values_list("version", flat=True)
    )
    assert versions == list(range(1, THREADS + 1))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_pinning_the_policy_in_force_create_one_version():
    model = RegisteredModelFactory()
    pinned: list[int] = []
    errors = _race(lambda i: pinned.append(policy_in_force("validation", model, SYSTEM).pk))
    assert errors == []
    assert ValidationPolicy.objects.filter(model=model).count() == 1
    assert len(set(pinned)) == 1
