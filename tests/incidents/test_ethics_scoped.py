"""An ethics policy may scope a halt: a breach confined to one group halts that group only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from governance import audit
from governance.models import AuditEvent
from incidents.ethics import confined_group, ethics_check_model, ethics_policy_update
from incidents.models import EthicsPolicy, Incident
from monitoring.models import MonitorRun
from serving.halt import active_halt
from serving.models import Halt
from tests.governance.lifecycle_helpers import person
from tests.incidents.helpers import live_pair, live_single
from tests.incidents.test_ethics import FAIR, fairness_run

pytestmark = pytest.mark.django_db
LIMITS = {"fpr_ratio": {"min": 0.5}}
HARBOUR = {"field": "sensitive.district", "op": "in", "value": ["harbour"]}


def group(fpr: float, judged: bool = True) -> dict:
    return {"n": 200, "n_negative": 150, "fpr": fpr, "tpr": 0.7, "judged": judged}


def district(**fprs: float) -> dict:
    """A district attribute, its fpr_ratio computed from the groups' FPRs as monitoring does."""
    groups = {name: group(fpr) for name, fpr in fprs.items()}
    values = list(fprs.values())
    return {
        **FAIR,
        "n_judged_groups": len(groups),
        "fpr_ratio": min(values) / max(values),
        "groups": groups,
    }


def set_policy(model, scoped=("district",), limits=None) -> EthicsPolicy:
    return ethics_policy_update(
        model_name=model.name,
        fairness_limits=LIMITS if limits is None else limits,
        prohibited_features=[],
        scoped_attributes=list(scoped),
        reason="board decision: halt one district, not the city",
        actor=person("ethics_officer"),
    )


def test_a_breach_confined_to_one_group_halts_that_groups_requests_only():
    _, v2 = live_pair()
    set_policy(v2.model)
    fairness_run(v2, district=district(harbour=0.40, northgate=0.10, eastfield=0.11))

    outcome = ethics_check_model(v2.model)

    assert outcome["action"] == "halted"
    assert active_halt(v2.model.name) is None  # the model is not halted as a whole
    halt = Halt.objects.get(pk=outcome["halt"])
    assert halt.where == HARBOUR and halt.where_text == 'sensitive.district in {"harbour"}'
    assert "confined to district=harbour" in halt.reason
    incident = Incident.objects.get(kind="ethics")
    assert incident.halt == halt and 'halted where sensitive.district in {"harbour"}' in (
        incident.title
    )
    [why] = incident.events.filter(kind="decision")
    assert "scoped: requests where sensitive.district" in why.message
    assert why.data["where"] == HARBOUR
    engaged = AuditEvent.objects.get(action="halt.engaged")
    assert engaged.after["where"] == HARBOUR
    assert AuditEvent.objects.get(action="incidents.ethics_halt").after["where"] == HARBOUR
    assert audit.verify().valid


def test_without_the_policy_naming_the_attribute_the_whole_model_halts():
    _, v2 = live_pair()
    set_policy(v2.model, scoped=())
    fairness_run(v2, district=district(harbour=0.40, northgate=0.10, eastfield=0.11))

    ethics_check_model(v2.model)

    halt = active_halt(v2.model.name)
    assert halt is not None and halt.where is None
    assert "confined" not in halt.reason


@pytest.mark.parametrize(
    "fprs",
    [
        {"harbour": 0.60, "northgate": 0.05, "eastfield": 0.20},  # no one group explains it
        {"harbour": 0.40, "northgate": 0.10},  # two groups: the breach is neither's alone
    ],
)
def test_a_breach_not_confined_to_one_group_halts_the_whole_model(fprs):
    _, v2 = live_pair()
    set_policy(v2.model)
    fairness_run(v2, district=district(**fprs))

    ethics_check_model(v2.model)

    assert active_halt(v2.model.name) is not None
    assert not Halt.objects.filter(where__isnull=False).exists()


def test_breaches_on_two_attributes_halt_the_whole_model():
    _, v2 = live_pair()
    set_policy(v2.model, scoped=("district", "age_band"))
    fairness_run(
        v2,
        district=district(harbour=0.40, northgate=0.10, eastfield=0.11),
        age_band=district(young=0.40, middle=0.10, old=0.11),
    )
    ethics_check_model(v2.model)
    assert active_halt(v2.model.name) is not None


def test_a_second_check_changes_nothing_and_a_wider_breach_halts_the_whole_model():
    _, v2 = live_pair()
    set_policy(v2.model)
    first_run = fairness_run(v2, district=district(harbour=0.40, northgate=0.10, eastfield=0.11))
    first = ethics_check_model(v2.model)
    assert ethics_check_model(v2.model)["action"] == "already halted"

    wider = fairness_run(v2, district=district(harbour=0.60, northgate=0.05, eastfield=0.20))
    MonitorRun.objects.filter(pk=wider.pk).update(window_end=first_run.window_end + timedelta(1))
    widened = ethics_check_model(v2.model)

    assert widened["action"] == "joined" and widened["incident"] == first["incident"]
    whole = active_halt(v2.model.name)
    assert whole is not None and Incident.objects.get(kind="ethics").halt == whole
    assert Halt.objects.filter(where__isnull=False, released_at__isnull=True).count() == 1


@pytest.mark.parametrize(
    ("fprs", "expected"),
    [
        ({"a": 0.1, "b": 0.11, "c": 0.4}, "c"),
        ({"a": 0.02, "b": 0.2, "c": 0.21}, "a"),  # the low one is the odd one out
        ({"a": 0.1, "b": 0.4, "c": 0.45}, "a"),
        ({"a": 0.05, "b": 0.2, "c": 0.6}, None),
        ({"a": 0.1, "b": 0.4}, None),
    ],
)
def test_confined_group_is_the_one_whose_removal_brings_the_rest_within_the_bound(fprs, expected):
    groups = {name: group(fpr) for name, fpr in fprs.items()}
    assert confined_group(groups, "fpr_ratio", "min", 0.5) == expected


def test_a_group_too_small_to_judge_is_not_counted():
    groups = {"a": group(0.1), "b": group(0.11), "c": group(0.4), "tiny": group(0.9, False)}
    assert confined_group(groups, "fpr_ratio", "min", 0.5) == "c"


def test_the_api_reads_and_writes_scoped_attributes_and_names_bad_ones(api_client):
    version = live_single()
    url = f"/api/v1/models/{version.model.name}/ethics-policy/"
    officer = api_client("ethics_officer", username="officer")
    assert officer.get(url).json()["scoped_attributes"] == []

    bad = officer.put(url, {"scoped_attributes": ["ok", ""], "reason": "x"}, format="json")
    assert bad.status_code == 400 and "scoped_attributes.1" in bad.json()["errors"]

    good = officer.put(
        url,
        {"fairness_limits": LIMITS, "scoped_attributes": ["district"], "reason": "board"},
        format="json",
    )
    assert good.status_code == 200 and good.json()["scoped_attributes"] == ["district"]


def test_the_gateway_serves_the_other_groups_after_a_scoped_ethics_halt(
    mlflow_models, api_client, gateway, django_capture_on_commit_callbacks
):
    from tests.serving.helpers import instances, live, predict

    version = live(mlflow_models, seed=3)
    name = version.model.name
    ci = api_client("ci", username="gateway-ci")
    fairness_run(version, district=district(harbour=0.40, northgate=0.10, eastfield=0.11))
    assert predict(ci, name, instances()).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        set_policy(version.model)  # checked right after commit: the breach halts harbour

    rows = instances(2)
    harbour = predict(
        ci, name, rows, sensitive=[{"district": "northgate"}, {"district": "harbour"}]
    )
    northgate = predict(ci, name, rows, sensitive=[{"district": "northgate"}] * 2)
    unknown = predict(ci, name, rows)
    assert harbour.status_code == 503 and harbour.json()["matched"] == [1]
    assert "confined to district=harbour" in harbour.json()["reason"]
    assert northgate.status_code == 200
    assert unknown.status_code == 503 and unknown.json()["unevaluable"] == [0, 1]


def test_the_incident_api_shows_the_halts_condition(api_client):
    _, v2 = live_pair()
    set_policy(v2.model)
    fairness_run(v2, district=district(harbour=0.40, northgate=0.10, eastfield=0.11))
    incident = ethics_check_model(v2.model)["incident"]
    lead = api_client("ml_lead", username="lead")

    halt = lead.get(f"/api/v1/incidents/{incident}/").json()["halt"]

    assert halt["where"] == HARBOUR
    assert halt["where_text"] == 'sensitive.district in {"harbour"}'
