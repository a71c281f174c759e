"""Validation gates: CI posts evidence, the platform computes metrics, fairness and calibration.

Records are synthetic, from a seeded RNG: calibrated scores (label ~ Bernoulli(score)) in two
areas of 1,500 records each pass every default gate; each failing case breaks one property only.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from governance import evidence, gates
from governance.audit import Actor
from governance.models import (
    Approval,
    AuditEvent,
    Evaluation,
    EvidenceKind,
    Lifecycle,
    Stage,
)
from governance.policies import policy_publish
from platform_core.errors import Conflict, InvalidInput
from tests.factories import ModelVersionFactory, RegisteredModelFactory, UserFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/hotspot/versions/1.0.0/evaluations/"
CI = Actor.system("ci-tests")


@pytest.fixture(autouse=True)
def _evidence_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path / "evidence"


@pytest.fixture
def version():
    model = RegisteredModelFactory(name="hotspot")
    return ModelVersionFactory(model=model, version="1.0.0", thresholds={"decision": 0.5})


@pytest.fixture
def ci(api_client, version):
    return api_client("ci")


def make_records(groups: dict[str, int] | None = None, *, seed: int = 7) -> list[dict]:
    """Calibrated scores: every gate of the default policy passes on these."""
    rng = np.random.default_rng(seed)
    records = []
    for group, n in (groups or {"north": 1500, "south": 1500}).items():
        scores = rng.uniform(0.02, 0.98, n)
        labels = (rng.uniform(size=n) < scores).astype(int)
        records += [
            {"score": round(float(s), 6), "label": int(y), "sensitive": {"area": group}}
            for s, y in zip(scores, labels, strict=True)
        ]
    return records


def with_timestamps(records: list[dict], *, days: float) -> list[dict]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=days) / (len(records) - 1)
    return [{**r, "timestamp": (start + i * step).isoformat()} for i, r in enumerate(records)]


def submit(version, kind: str, **payload) -> Evaluation:
    return gates.evaluation_submit(
        model_name=version.model.name,
        version=version.version,
        kind=kind,
        payload={"kind": kind, **payload},
        actor=CI,
    )


def gate(report: dict, name: str) -> dict:
    return next(g for g in report["gates"] if g["gate"] == name)


def set_stage(version, stage: str) -> None:
    Lifecycle.objects.filter(version=version).update(stage=stage)  # test set-up only


def stored_files(evidence_dir) -> list:
    return sorted(p.name for p in evidence_dir.glob("*")) if evidence_dir.exists() else []


# --- the report ---------------------------------------------------------------------------------


def test_calibrated_fair_records_pass_every_gate_with_the_report_in_pipeline_order(ci):
    response = ci.post(URL, {"kind": "validation", "records": make_records()}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["passed"] is True
    assert body["policy_version"] == 1
    assert [g["gate"] for g in body["gates"]] == ["metrics", "fairness", "calibration"]
    assert all(set(g) >= {"gate", "passed", "values", "thresholds"} for g in body["gates"])
    metrics, fairness, calibration = body["gates"]
    assert metrics["thresholds"] == {"auc_min": 0.7}
    assert metrics["values"]["auc"] > 0.75 and metrics["values"]["n"] == 3000
    assert {"accuracy", "precision", "recall", "f1", "brier"} <= set(metrics["values"])
    assert fairness["thresholds"] == {
        "equalized_odds_difference_max": 0.1,
        "fpr_ratio_min": 0.8,
        "fnr_ratio_min": 0.8,
        "min_group_size": 30,
        "confidence_level": 0.95,
    }
    area = fairness["values"]["area"]
    assert area["judged"] is True and area["equalized_odds_difference"] <= 0.1
    assert area["fpr_ratio"] >= 0.8 and area["fnr_ratio"] >= 0.8
    assert set(area["groups"]) == {"north", "south"}
    assert {"n", "fpr", "fnr", "judged"} <= set(area["groups"]["north"])
    assert calibration["thresholds"] == {"ece_max": 0.05}
    assert calibration["values"]["ece"] <= 0.05
    assert body["kind"] == "validation" and body["records"] == 3000
    assert body["stage"] == "development"
    stored = Evaluation.objects.get()
    assert stored.report == {k: body[k] for k in ("passed", "policy_version", "gates")}
    assert stored.policy.version == 1 and stored.evidence_digest == body["evidence_digest"]


def test_reported_registry_metrics_are_never_used(version):
    version.__class__.objects.filter(pk=version.pk).update(metrics={"auc": 0.99})
    records = [{**r, "score": 0.5} for r in make_records()]
    evaluation = submit(version, "validation", records=records)
    assert gate(evaluation.report, "metrics")["values"]["auc"] == 0.5


def test_metrics_gate_fails_when_auc_is_below_the_policy_minimum(version):
    # Constant scores: AUC 0.5, yet calibrated (mean label ~ 0.5) and equal rates in both areas.
    records = [{**r, "score": 0.5} for r in make_records()]
    report = submit(version, "validation", records=records).report
    assert report["passed"] is False
    metrics = gate(report, "metrics")
    assert metrics["passed"] is False and metrics["values"]["auc"] == 0.5
    assert metrics["reasons"] == ["AUC 0.5000 is below the minimum 0.7"]
    assert gate(report, "fairness")["passed"] and gate(report, "calibration")["passed"]


def test_fairness_gate_fails_when_one_area_has_a_much_higher_false_positive_rate(version):
    rng = np.random.default_rng(3)
    records = make_records()
    for r in records:  # flag 40% of south's negatives: scores stay calibrated, FPR does not
        if r["sensitive"]["area"] == "south" and r["label"] == 0:
            r["prediction"] = int(rng.uniform() < 0.4 or r["score"] >= 0.5)
    report = submit(version, "validation", records=records).report
    fairness = gate(report, "fairness")
    assert report["passed"] is False and fairness["passed"] is False
    area = fairness["values"]["area"]
    assert area["groups"]["south"]["fpr"] > area["groups"]["north"]["fpr"] + 0.2
    assert area["fpr_ratio"] < 0.8 and area["equalized_odds_difference"] > 0.1
    assert any("area: FPR ratio" in reason for reason in fairness["reasons"])
    assert gate(report, "metrics")["passed"] and gate(report, "calibration")["passed"]


def test_calibration_gate_fails_when_scores_are_squashed_towards_one_half(version):
    # A monotone squash keeps ranking (AUC) and the 0.5 cut (fairness) but breaks calibration.
    records = [{**r, "score": 0.5 + (r["score"] - 0.5) * 0.5} for r in make_records()]
    report = submit(version, "validation", records=records).report
    calibration = gate(report, "calibration")
    assert calibration["passed"] is False and calibration["values"]["ece"] > 0.05
    assert calibration["reasons"][0].startswith("ECE ")
    assert gate(report, "metrics")["passed"] and gate(report, "fairness")["passed"]


def test_groups_under_thirty_records_are_reported_but_not_judged(version):
    records = make_records({"north": 1500, "south": 1500, "east": 12})
    for r in records:  # east is flagged wholesale: it would fail every ratio if it were judged
        if r["sensitive"]["area"] == "east":
            r["prediction"] = 1 - r["label"]
    report = submit(version, "validation", records=records).report
    fairness = gate(report, "fairness")
    assert fairness["passed"] is True
    east = fairness["values"]["area"]["groups"]["east"]
    assert east == {**east, "n": 12, "judged": False, "fpr": 1.0, "fnr": 1.0}
    assert fairness["values"]["area"]["n_judged_groups"] == 2
    assert "east" in fairness["values"]["area"]["note"]


def test_fairness_gate_fails_with_a_reason_when_no_attribute_can_be_judged(version):
    records = make_records({"north": 2000, "south": 20})
    report = submit(version, "validation", records=records).report
    fairness = gate(report, "fairness")
    assert fairness["passed"] is False and report["passed"] is False
    assert fairness["values"]["area"]["judged"] is False
    assert fairness["reasons"] == [
        "fairness cannot be judged: no sensitive attribute has two or more groups of at least "
        "30 records (area)"
    ]


def test_fairness_gate_fails_when_records_carry_no_sensitive_attribute(version):
    records = [{"score": r["score"], "label": r["label"]} for r in make_records()]
    fairness = gate(submit(version, "validation", records=records).report, "fairness")
    assert fairness["passed"] is False
    assert "no sensitive attribute" in fairness["reasons"][0]


def test_predicted_class_defaults_to_the_versions_decision_threshold():
    model = RegisteredModelFactory(name="strict")
    version = ModelVersionFactory(model=model, version="1.0.0", thresholds={"decision": 0.9})
    report = submit(version, "validation", records=make_records()).report
    assert gate(report, "metrics")["values"]["decision_threshold"] == 0.9
    assert gate(report, "fairness")["values"]["area"]["groups"]["north"]["fpr"] < 0.05


def test_the_gates_use_the_current_policy_version_and_record_it(version):
    policy = policy_publish(
        "validation", model=version.model, values={"auc_min": 0.95}, reason="stricter", actor=CI
    )
    evaluation = submit(version, "validation", records=make_records())
    assert evaluation.report["policy_version"] == policy.version == evaluation.policy.version
    assert gate(evaluation.report, "metrics")["thresholds"] == {"auc_min": 0.95}
    assert evaluation.passed is False


# --- records: JSON, CSV, Parquet, refusals ------------------------------------------------------


def _frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "score": [r["score"] for r in records],
            "label": [r["label"] for r in records],
            "sensitive.area": [r["sensitive"]["area"] for r in records],
        }
    )


def test_csv_upload_gives_the_same_report_and_digest_as_json(ci, version):
    records = make_records()
    as_json = ci.post(URL, {"kind": "validation", "records": records}, format="json").json()
    csv = SimpleUploadedFile("val.csv", _frame(records).to_csv(index=False).encode(), "text/csv")
    response = ci.post(URL, {"kind": "validation", "file": csv}, format="multipart")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["evidence_digest"] == as_json["evidence_digest"]
    assert body["gates"] == as_json["gates"] and body["records"] == 3000


def test_parquet_upload_is_accepted_and_stored_as_parquet(ci, version, _evidence_dir):
    records = with_timestamps(make_records(), days=2)
    frame = _frame(records).assign(
        timestamp=pd.to_datetime([r["timestamp"] for r in records], utc=True, format="ISO8601"),
        prediction=[None] * 10 + [1] * (len(records) - 10),
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    upload = SimpleUploadedFile("val.parquet", buffer.getvalue(), "application/octet-stream")
    response = ci.post(URL, {"kind": "validation", "file": upload}, format="multipart")
    assert response.status_code == 201, response.json()
    evaluation = Evaluation.objects.get()
    assert evaluation.data_path == f"evidence/{evaluation.evidence_digest}.parquet"
    assert stored_files(_evidence_dir) == [f"{evaluation.evidence_digest}.parquet"]
    stored = evidence.load(evaluation.data_path)
    assert len(stored) == 3000
    assert {"score", "label", "prediction", "timestamp", "sensitive.area"} <= set(stored.columns)
    assert stored["prediction"].isna().sum() == 10


def test_a_bad_record_refuses_the_whole_batch_naming_record_and_field(ci, _evidence_dir):
    records = make_records()
    records[3]["score"] = 1.5
    records[7]["label"] = 2
    records[9]["sensitive"] = {}
    response = ci.post(URL, {"kind": "validation", "records": records}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["records[3].score"] == ["must be a number in [0, 1]"]
    assert errors["records[7].label"] == ["must be 0 or 1"]
    assert "records[9].sensitive" in errors
    assert Evaluation.objects.count() == 0
    assert not AuditEvent.objects.filter(action="evaluation.recorded").exists()
    assert stored_files(_evidence_dir) == []


def test_a_bad_csv_row_is_named_by_its_record_index(ci, _evidence_dir):
    frame = _frame(make_records({"north": 40, "south": 40})).astype({"score": object})
    frame.loc[5, "score"] = "high"
    csv = SimpleUploadedFile("val.csv", frame.to_csv(index=False).encode(), "text/csv")
    response = ci.post(URL, {"kind": "validation", "file": csv}, format="multipart")
    assert response.status_code == 400
    assert response.json()["errors"] == {"records[5].score": ["must be a number in [0, 1]"]}
    assert Evaluation.objects.count() == 0 and stored_files(_evidence_dir) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "validation"}, "records"),
        ({"kind": "validation", "records": []}, "records"),
        ({"kind": "validation", "records": [{"score": 0.4, "label": 1, "x": 1}]}, "records[0].x"),
        ({"kind": "validation", "records": [{"label": 1}]}, "records[0].score"),
        ({"kind": "validation", "records": [{"score": True, "label": 1}]}, "records[0].score"),
        ({"kind": "validation", "records": [{"score": 0.4, "label": 1, "prediction": 3}]},
         "records[0].prediction"),
        ({"kind": "validation", "records": [{"score": 0.4, "label": 1, "timestamp": "soon"}]},
         "records[0].timestamp"),
        ({"kind": "shadow_replay", "records": [{"score": 0.4, "label": 1}]},
         "records[0].timestamp"),
        ({"kind": "unit_tests"}, "passed"),
        ({"kind": "unit_tests", "passed": "yes"}, "passed"),
        ({"kind": "shadow"}, "kind"),
        ({"kind": "vibes"}, "kind"),
        ({}, "kind"),
    ],
)  # fmt: skip
def test_invalid_evidence_is_400_naming_the_field(ci, body, field):
    response = ci.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    assert Evaluation.objects.count() == 0


def test_records_with_different_sensitive_attributes_are_refused(version):
    records = make_records({"north": 40, "south": 40})
    records[50]["sensitive"] = {"area": "north", "age_band": "18-25"}
    with pytest.raises(InvalidInput) as refused:
        submit(version, "validation", records=records)
    assert "unexpected age_band" in refused.value.errors["records[50].sensitive"][0]


# --- unit tests, shadow replay ------------------------------------------------------------------


def test_unit_test_results_are_recorded_as_reported(ci):
    response = ci.post(
        URL, {"kind": "unit_tests", "passed": True, "summary": "412 passed"}, format="json"
    )
    assert response.status_code == 201, response.json()
    evaluation = Evaluation.objects.get()
    assert evaluation.kind == EvidenceKind.UNIT_TESTS and evaluation.passed is True
    assert evaluation.report == {"passed": True, "summary": "412 passed"}
    assert evaluation.records == 0 and evaluation.data_path == ""
    failed = submit(evaluation.version, "unit_tests", passed=False, summary="3 failed")
    assert failed.passed is False
    assert gates.latest_evaluation(evaluation.version, "unit_tests") == failed


def test_shadow_replay_over_the_shadow_period_passes_with_a_fourth_gate(version):
    records = with_timestamps(make_records(), days=8)
    evaluation = submit(version, "shadow_replay", records=records)
    assert evaluation.passed is True
    names = [g["gate"] for g in evaluation.report["gates"]]
    assert names == ["metrics", "fairness", "calibration", "shadow_period"]
    period = gate(evaluation.report, "shadow_period")
    assert period["values"]["span_days"] == 8.0 and period["thresholds"] == {"shadow_days": 7}


def test_shadow_replay_fails_when_its_timestamps_span_less_than_seven_days(version):
    evaluation = submit(version, "shadow_replay", records=with_timestamps(make_records(), days=3))
    assert evaluation.passed is False
    period = gate(evaluation.report, "shadow_period")
    assert period["passed"] is False
    assert period["reasons"] == ["the records span 3.00 days; the shadow period is 7 days"]
    assert all(g["passed"] for g in evaluation.report["gates"][:3])


def test_shadow_replay_is_refused_with_409_while_another_version_is_live(ci, version):
    live = ModelVersionFactory(model=version.model, version="0.9.0")
    set_stage(live, Stage.PRODUCTION)
    records = with_timestamps(make_records(), days=8)
    response = ci.post(URL, {"kind": "shadow_replay", "records": records}, format="json")
    assert response.status_code == 409
    assert "no live version" in response.json()["detail"]
    assert "hotspot 0.9.0" in response.json()["detail"]
    assert Evaluation.objects.count() == 0
    with pytest.raises(Conflict):
        submit(version, "shadow_replay", records=records)


# --- effects: approvals, lifecycle, audit -------------------------------------------------------


def test_new_evidence_voids_the_versions_earlier_approvals(version):
    approval = Approval.objects.create(
        version=version,
        transition="approve_for_staging",
        role="ml_lead",
        user=UserFactory(username="lead"),
        decision="approve",
        artifact_digest=version.artifact_digest,
        evidence_digest="0" * 64,
    )
    evaluation = submit(version, "validation", records=make_records())
    approval.refresh_from_db()
    assert approval.voided_at is not None
    assert approval.voided_reason == "new evidence: validation"
    event = AuditEvent.objects.filter(action="evaluation.recorded").get()
    assert event.after["approvals_voided"] == 1
    assert event.seq == AuditEvent.objects.order_by("-seq").first().seq  # the last statement
    assert event.object_id == str(evaluation.pk)


def test_recording_an_evaluation_is_audited_with_kind_verdict_policy_and_digest(ci):
    ci.post(URL, {"kind": "validation", "records": make_records()}, format="json")
    evaluation = Evaluation.objects.get()
    event = AuditEvent.objects.get(action="evaluation.recorded")
    assert event.model_name == "hotspot" and event.actor.startswith("ci-user")
    assert event.after == {
        "version": "1.0.0",
        "kind": "validation",
        "passed": True,
        "policy_version": 1,
        "evidence_digest": evaluation.evidence_digest,
        "records": 3000,
        "approvals_voided": 0,
    }


def test_a_failing_validation_sends_a_version_in_validation_back_to_development(ci, version):
    set_stage(version, Stage.VALIDATION)
    records = [{**r, "score": 0.5} for r in make_records()]
    response = ci.post(URL, {"kind": "validation", "records": records}, format="json")
    assert response.status_code == 201
    assert response.json()["passed"] is False and response.json()["stage"] == "development"
    assert Lifecycle.objects.get(version=version).stage == Stage.DEVELOPMENT
    event = AuditEvent.objects.get(action="lifecycle.fail_validation")
    assert event.actor == "system:validation gates"
    assert "failed gate(s): metrics" in event.reason


def test_a_failing_shadow_replay_in_staging_sends_the_version_back_to_validation(version):
    set_stage(version, Stage.STAGING)
    evaluation = submit(version, "shadow_replay", records=with_timestamps(make_records(), days=2))
    assert evaluation.passed is False
    assert Lifecycle.objects.get(version=version).stage == Stage.VALIDATION
    event = AuditEvent.objects.get(action="lifecycle.fail_shadow")
    assert event.actor == "system:validation gates" and "shadow_period" in event.reason


def test_a_passing_validation_leaves_the_stage_alone(version):
    set_stage(version, Stage.VALIDATION)
    assert submit(version, "validation", records=make_records()).passed
    assert Lifecycle.objects.get(version=version).stage == Stage.VALIDATION
    assert gates.gates_passed(version) is True


def test_a_failing_validation_outside_stage_validation_changes_no_stage(version):
    submit(version, "validation", records=[{**r, "score": 0.5} for r in make_records()])
    assert Lifecycle.objects.get(version=version).stage == Stage.DEVELOPMENT
    assert not AuditEvent.objects.filter(action__startswith="lifecycle.").exists()


def test_gates_passed_follows_the_latest_validation_evaluation(version):
    assert gates.gates_passed(version) is False
    submit(version, "validation", records=make_records())
    assert gates.gates_passed(version) is True
    submit(version, "validation", records=[{**r, "score": 0.5} for r in make_records()])
    assert gates.gates_passed(version) is False
    submit(version, "unit_tests", passed=True)
    assert gates.gates_passed(version) is False


# --- API: permissions, listing, idempotency -----------------------------------------------------


def test_only_roles_that_submit_evidence_may_post(api_client, version):
    pm = api_client("product_manager")
    response = pm.post(URL, {"kind": "unit_tests", "passed": True}, format="json")
    assert response.status_code == 403
    assert "submit_evidence" in response.json()["detail"]
    assert pm.get(URL).status_code == 200
    assert Evaluation.objects.count() == 0


def test_evaluations_are_listed_newest_first_and_filterable_by_kind(ci, version):
    ci.post(URL, {"kind": "unit_tests", "passed": True, "summary": "ok"}, format="json")
    ci.post(URL, {"kind": "validation", "records": make_records()}, format="json")
    listed = ci.get(URL).json()["results"]
    assert [e["kind"] for e in listed] == ["validation", "unit_tests"]
    assert listed[0]["policy_version"] == 1 and listed[0]["report"]["passed"] is True
    only = ci.get(URL + "?kind=unit_tests").json()["results"]
    assert [e["kind"] for e in only] == ["unit_tests"]


def test_an_unknown_version_is_404(ci):
    response = ci.post(
        "/api/v1/models/hotspot/versions/9.9.9/evaluations/",
        {"kind": "unit_tests", "passed": True},
        format="json",
    )
    assert response.status_code == 404


def test_a_retry_with_the_same_idempotency_key_records_one_evaluation(ci):
    body = {"kind": "validation", "records": make_records({"north": 40, "south": 40})}
    first = ci.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="run-42-validation")
    again = ci.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="run-42-validation")
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Evaluation.objects.count() == 1


def test_identical_batches_share_one_stored_file(version, _evidence_dir):
    first = submit(version, "validation", records=make_records())
    second = submit(version, "validation", records=make_records())
    assert first.data_path == second.data_path
    assert len(stored_files(_evidence_dir)) == 1


def test_a_json_body_over_the_upload_limit_is_413_pointing_to_file_upload(ci, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = ci.post(URL, {"kind": "validation", "records": make_records()}, format="json")
    assert response.status_code == 413
    assert "upload the records as a CSV or Parquet file" in response.json()["detail"]
    assert Evaluation.objects.count() == 0
