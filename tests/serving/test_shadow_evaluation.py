"""The shadow evaluation on logged traffic: agreement, KS, performance, fairness, the period.

And its schedule: the hourly task records it once the shadow period is over, which is what lets
a MINOR or MAJOR successor of the live version be promoted (or sends it back to validation).
"""

from datetime import timedelta

import numpy as np
import pytest
import time_machine

from governance.models import AuditEvent, Evaluation, EvidenceKind, Lifecycle
from platform_core.errors import Conflict
from serving import shadow, tasks
from serving.shadow_evaluation import (
    shadow_evaluate,
    shadow_evaluation_record,
    shadow_evaluation_record_due,
    shadow_evaluations_due,
)
from tests.concurrency import race
from tests.governance.lifecycle_helpers import (
    approve,
    evidence,
    live_and_staged,
    new_version,
    person,
    sign_promotion,
    stage,
    step,
    to_production_first,
    to_staging,
)
from tests.serving.helpers import FEATURES, live, log_to_store, predict, staged, warm

pytestmark = pytest.mark.django_db
ingest = pytest.importorskip("monitoring.ingest")


WIDE = ["f1", "f2", "f3", "f4"]


def traffic(n: int = 200, seed: int = 7, features=("f1", "f2", "f3")):
    """n instances twice: once per district, so both groups see exactly the same cases."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(features)))
    labels = (X[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    rows = [dict(zip(features, map(float, x), strict=True)) for x in X]
    return rows * 2, [{"district": d} for d in ["north"] * n + ["south"] * n], [*labels, *labels]


def serve_and_label(ci, name, committed, *, labelled: bool = True, data=None) -> None:
    from governance.audit import Actor

    rows, sensitive, labels = data or traffic()
    warm(ci, name)  # the shadow version loads off the request path
    ids = []
    for start in range(0, len(rows), 100):
        body = predict(
            ci, name, rows[start : start + 100], sensitive=sensitive[start : start + 100]
        ).json()
        ids += [p["prediction_id"] for p in body["predictions"]]
    shadow.drain()
    with committed():
        log_to_store()
        if labelled:
            ingest.labels_ingest(
                model_name=name,
                records=[
                    {"prediction_id": i, "label": int(y)} for i, y in zip(ids, labels, strict=True)
                ],
                actor=Actor.system("tests"),
            )


def candidate(mlflow_models, v1, **kwargs):
    """A 1.1.0 in staging: the same artifact as the live version unless told otherwise."""
    return staged(mlflow_models, v1.model, "1.1.0", seed=61, **kwargs)


def test_a_shadow_that_agrees_passes_every_gate_after_the_shadow_period(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)

    with time_machine.travel(timedelta(days=8)):
        report = shadow_evaluate(v2)

    gates = {g["gate"]: g for g in report["gates"]}
    assert report["passed"] is True, [g["reasons"] for g in report["gates"]]
    assert report["records"] == {"shadow": 400, "live": 400, "paired": 400}
    assert gates["agreement"]["values"]["agreement"] == 1.0
    assert gates["score_distribution"]["values"]["p_value"] == pytest.approx(1.0)
    assert gates["metrics"]["values"]["auc"] > 0.7
    assert gates["metrics"]["values"]["live_version"] == "1.0.0"
    assert gates["fairness"]["passed"] is True


def test_the_shadow_period_must_have_passed(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)

    report = shadow_evaluate(v2)

    [period] = [g for g in report["gates"] if g["gate"] == "shadow_period"]
    assert report["passed"] is False and period["passed"] is False
    assert "days in shadow" in period["reasons"][0]


def test_a_shadow_that_disagrees_fails_and_goes_back_to_validation(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1, thresholds={"decision": 0.97})
    serve_and_label(ci, v1.model.name, committed)

    with time_machine.travel(timedelta(days=8)), committed():
        evaluation = shadow_evaluation_record(version=v2)

    assert evaluation.kind == EvidenceKind.SHADOW and evaluation.passed is False
    failed = {g["gate"] for g in evaluation.report["gates"] if not g["passed"]}
    assert "agreement" in failed
    assert stage(v2) == "validation"


def test_without_labels_performance_and_fairness_are_not_judged_so_it_fails(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed, labelled=False)

    with time_machine.travel(timedelta(days=8)):
        report = shadow_evaluate(v2)

    gates = {g["gate"]: g for g in report["gates"]}
    assert gates["agreement"]["passed"] and gates["score_distribution"]["passed"]
    assert not gates["metrics"]["passed"] and not gates["fairness"]["passed"]
    assert "no labelled shadow records" in gates["metrics"]["reasons"][0]


def test_a_passing_record_is_the_shadow_evidence_promote_needs(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)

    with time_machine.travel(timedelta(days=8)):
        evaluation = shadow_evaluation_record(version=v2)

    assert evaluation.passed is True
    assert Evaluation.objects.filter(version=v2, kind=EvidenceKind.SHADOW).count() == 1
    assert stage(v2) == "staging"


# --- the hourly schedule ------------------------------------------------------------------------


def _restage(version) -> None:
    """Back from validation to staging: new validation evidence and the ML Lead's approval."""
    evidence(version, EvidenceKind.VALIDATION)
    approve(version, "approve_for_staging", "ml_lead")
    step(version, "approve_for_staging", actor=person("ci"))


def test_a_minor_successor_is_promoted_after_seven_days_of_shadow_and_its_recorded_evaluation(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)
    sign_promotion(v2)  # signed early: the shadow evidence will void it

    with time_machine.travel(timedelta(days=3)):
        assert shadow_evaluations_due() == []
        with pytest.raises(Conflict) as early:
            step(v2, "promote", actor=person("ci"))
    assert any("shadow period ends" in r for r in early.value.reasons)

    with time_machine.travel(timedelta(days=7, minutes=5)):
        assert shadow_evaluations_due() == [v2.pk]
        evaluation = shadow_evaluation_record_due(version_id=v2.pk)
        assert evaluation.passed is True and stage(v2) == "staging"
        assert shadow_evaluations_due() == []  # recorded once for this stay
        with pytest.raises(Conflict) as unsigned:
            step(v2, "promote", actor=person("ci"))
        assert all("shadow" not in r for r in unsigned.value.reasons)  # only the sign-offs
        sign_promotion(v2)  # on the shadow result
        step(v2, "promote", actor=person("ci"))

    assert stage(v2) == "production" and stage(v1) == "retired"
    event = AuditEvent.objects.get(action="evaluation.recorded", after__kind="shadow")
    assert event.actor == "system:serving gateway" and event.after["passed"] is True


def test_a_failing_scheduled_evaluation_takes_fail_shadow_and_the_next_stay_is_due_again(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1, thresholds={"decision": 0.97})  # disagrees with 1.0.0
    serve_and_label(ci, v1.model.name, committed)

    with time_machine.travel(timedelta(days=8)):
        outcome = tasks.record_shadow_evaluation.apply(args=(v2.pk,)).get()
        assert outcome["passed"] is False
        assert stage(v2) == "validation"
        assert shadow_evaluations_due() == []
        sent_back = AuditEvent.objects.get(action="lifecycle.fail_shadow")
        assert sent_back.actor == "system:serving gateway"
        assert f"shadow evaluation {outcome['evaluation']} failed" in sent_back.reason
        assert "agreement" in sent_back.reason
        _restage(v2)  # fixed, validated again: a new stay in staging

    with time_machine.travel(timedelta(days=12)):
        assert shadow_evaluations_due() == []  # four days into the new stay
    with time_machine.travel(timedelta(days=16)):
        assert shadow_evaluations_due() == [v2.pk]


def test_the_scheduled_record_is_idempotent(mlflow_models, ci, committed):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)

    with time_machine.travel(timedelta(days=8)):
        first = shadow_evaluation_record_due(version_id=v2.pk)
        again = tasks.record_shadow_evaluation.apply(args=(v2.pk,)).get()

    assert again == {"evaluation": first.pk, "passed": True}
    assert Evaluation.objects.filter(version=v2, kind=EvidenceKind.SHADOW).count() == 1
    assert AuditEvent.objects.filter(action="evaluation.recorded").count() == 1


def test_a_version_that_left_staging_gets_no_scheduled_evaluation(mlflow_models, ci):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)
    with time_machine.travel(timedelta(days=8)):
        due = shadow_evaluations_due()
        Lifecycle.objects.filter(version=v2).update(stage="validation")  # moved meanwhile

        assert due == [v2.pk]
        skipped = shadow_evaluation_record_due(version_id=v2.pk)
        assert skipped["status"] == "skipped"
        assert skipped["reason"] == "1.1.0 left staging (it is in validation)"
    assert not Evaluation.objects.filter(version=v2, kind=EvidenceKind.SHADOW).exists()


@pytest.mark.parametrize(("successor", "due"), [("1.1.0", True), ("2.0.0", True), ("1.0.1", False)])
def test_minor_and_major_successors_are_due_a_fast_tracked_patch_is_not(successor, due):
    v1 = new_version("1.0.0")
    to_production_first(v1)
    v2 = new_version(successor, model=v1.model)
    to_staging(v2)

    with time_machine.travel(timedelta(days=7, minutes=1)):
        assert shadow_evaluations_due() == ([v2.pk] if due else [])


def test_a_first_version_in_staging_is_never_due():
    v1 = new_version("1.0.0")
    to_staging(v1)  # no live version: its shadow_replay evidence stands in

    with time_machine.travel(timedelta(days=30)):
        assert shadow_evaluations_due() == []


def test_the_shadow_period_comes_from_the_validation_policy():
    from governance.policies import policy_publish

    v1 = new_version("1.0.0")
    to_production_first(v1)
    policy_publish(
        "validation",
        model=v1.model,
        values={"shadow_days": 3},
        reason="short shadow for a low-risk model",
        actor=person("ethics_officer"),
    )
    v2 = new_version("1.1.0", model=v1.model)
    to_staging(v2)

    with time_machine.travel(timedelta(days=3, minutes=1)):
        assert shadow_evaluations_due() == [v2.pk]


def test_the_hourly_task_fans_out_one_evaluation_per_due_version(enqueued):
    _, v2 = live_and_staged("1.1.0")
    enqueued.clear()

    with time_machine.travel(timedelta(days=8)):
        assert tasks.record_shadow_evaluations.apply().get() == [v2.pk]

    assert enqueued == [("shadow_evaluation", v2.pk)]


def test_a_major_successor_whose_new_features_no_request_carried_fails_and_says_why():
    v1 = new_version("1.0.0", feature_list=["f1", "f2", "f3"])
    to_production_first(v1)
    v2 = new_version("2.0.0", model=v1.model, feature_list=WIDE)
    to_staging(v2)

    with time_machine.travel(timedelta(days=8)):
        evaluation = shadow_evaluation_record_due(version_id=v2.pk)

    [agreement] = [g for g in evaluation.report["gates"] if g["gate"] == "agreement"]
    assert evaluation.passed is False
    assert "features the live 1.0.0 does not use (f4)" in agreement["reasons"][1]
    assert "none of the 0 live predictions since it entered staging" in agreement["reasons"][1]
    assert agreement["values"]["features_beyond_live"] == ["f4"]
    assert stage(v2) == "validation"


def major(mlflow_models, v1):
    """A 2.0.0 in staging that also needs f4 (a feature-set change)."""
    return staged(mlflow_models, v1.model, "2.0.0", seed=62, feature_list=WIDE)


def test_a_major_with_a_new_feature_is_promoted_after_seven_days_of_traffic_carrying_it(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = major(mlflow_models, v1)
    name = v1.model.name
    for day, features in ((0, WIDE), (2, FEATURES), (4, WIDE), (6, WIDE)):
        with time_machine.travel(timedelta(days=day, hours=1)):
            data = traffic(60, seed=day, features=features)
            serve_and_label(ci, name, committed, data=data)

    with time_machine.travel(timedelta(days=7, minutes=5)):
        assert shadow_evaluations_due() == [v2.pk]
        outcome = tasks.record_shadow_evaluation.apply(args=(v2.pk,)).get()
        evaluation = Evaluation.objects.get(pk=outcome["evaluation"])
        assert outcome["passed"] is True, [g["values"] for g in evaluation.report["gates"]]
        assert stage(v2) == "staging"
        with committed():
            sign_promotion(v2)  # on the shadow result
            step(v2, "promote", actor=person("ci"))

    gates = {g["gate"]: g for g in evaluation.report["gates"]}
    assert evaluation.report["records"] == {"shadow": 360, "live": 480, "paired": 360}
    assert gates["agreement"]["values"]["live_unpaired"] == 120  # day 2 carried no f4
    counted = gates["agreement"]["values"]["gateway"]
    assert counted["scored"] == 360 and counted["failed"] == 0
    assert counted["not_carried"] == 120 + 3  # day 2, and the warm-up requests of days 2 to 6
    assert gates["agreement"]["values"]["features_beyond_live"] == ["f4"]
    assert stage(v2) == "production" and stage(v1) == "retired"
    served = predict(ci, name, traffic(1, features=WIDE)[0][:1]).json()
    assert served["version"] == "2.0.0"


def test_a_major_whose_traffic_never_carried_the_new_feature_fails_naming_it(
    mlflow_models, ci, committed
):
    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = major(mlflow_models, v1)
    serve_and_label(ci, v1.model.name, committed)  # f1..f3 only

    with time_machine.travel(timedelta(days=8)), committed():
        evaluation = shadow_evaluation_record(version=v2)

    [agreement] = [g for g in evaluation.report["gates"] if g["gate"] == "agreement"]
    assert evaluation.passed is False
    assert evaluation.report["records"] == {"shadow": 0, "live": 400, "paired": 0}
    assert "does not use (f4) and no request carried them" in agreement["reasons"][1]
    assert "the gateway counted 400 instances without them" in agreement["reasons"][1]
    assert len(agreement["reasons"]) == 2
    assert stage(v2) == "validation"


def test_a_major_whose_shadow_failed_on_the_new_features_says_so_not_that_none_came(
    mlflow_models, ci, committed, monkeypatch
):
    from serving import loader

    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = major(mlflow_models, v1)
    warm(ci, v1.model.name)
    broken = loader.loaded(v2.artifact_digest)
    monkeypatch.setattr(broken, "score", lambda X, features: 1 / 0)
    serve_and_label(ci, v1.model.name, committed, data=traffic(50, features=WIDE))

    with time_machine.travel(timedelta(days=8)):
        report = shadow_evaluate(v2)

    [agreement] = [g for g in report["gates"] if g["gate"] == "agreement"]
    counted = agreement["values"]["gateway"]
    assert counted["scored"] == 0 and counted["failed"] == 100
    assert agreement["reasons"][1:] == [
        "the gateway failed to shadow-score 100 instances with 2.0.0: see the gateway's log"
    ]


def test_a_version_whose_shadowed_live_version_was_replaced_is_sent_back_to_be_staged_again():
    v1 = new_version("1.0.0")
    to_production_first(v1)
    v2 = new_version("1.1.0", model=v1.model)
    to_staging(v2)  # shadows 1.0.0
    patch = new_version("1.0.1", model=v1.model)
    to_staging(patch)
    sign_promotion(patch)
    step(patch, "promote", actor=person("ci"))  # 1.0.1 serves now

    with time_machine.travel(timedelta(days=8)):
        evaluation = shadow_evaluation_record_due(version_id=v2.pk)

    [gate] = [g for g in evaluation.report["gates"] if g["gate"] == "live_version"]
    assert gate["passed"] is False
    assert "was 1.0.0, now 1.0.1" in gate["reasons"][0]
    assert stage(v2) == "validation"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_racing_to_record_the_same_evaluation_record_it_once():
    from governance import audit

    _, v2 = live_and_staged("1.1.0")
    with time_machine.travel(timedelta(days=8)):
        _, errors = race(lambda _: shadow_evaluation_record_due(version_id=v2.pk), 4)

    assert errors == []
    assert Evaluation.objects.filter(version=v2, kind=EvidenceKind.SHADOW).count() == 1
    assert AuditEvent.objects.filter(action="lifecycle.fail_shadow").count() == 1
    assert stage(v2) == "validation"
    assert audit.verify().valid


# --- one recording service for computed and submitted evidence ----------------------------------


def _recorded_outcome(evaluation: Evaluation) -> dict:
    """What recording a failing evaluation in staging did, in terms independent of its kind."""
    from governance.models import Approval

    version = evaluation.version
    event = AuditEvent.objects.get(action="evaluation.recorded", object_id=str(evaluation.pk))
    sent_back = AuditEvent.objects.get(
        action="lifecycle.fail_shadow", model_name=version.model.name
    )
    sign_offs = Approval.objects.filter(version=version, transition="promote")
    return {
        "stage": stage(version),
        "audit_after": sorted(event.after),
        "approvals_voided": event.after["approvals_voided"],
        "standing_approvals": sign_offs.filter(voided_at=None).count(),
        "void_reasons": set(sign_offs.values_list("voided_reason", flat=True)),
        "policy": (evaluation.policy.version, event.after["policy_version"]),
        "digest": event.after["evidence_digest"] == evaluation.evidence_digest,
        "sent_back": sent_back.reason.startswith(
            f"{evaluation.kind} evaluation {evaluation.pk} failed gate(s): "
        ),
    }


def test_shadow_and_submitted_evidence_are_recorded_by_the_same_governance_service(
    mlflow_models, monkeypatch
):
    from governance import gates
    from tests.governance.test_gates import make_records, submit, with_timestamps

    recorded = []
    service = gates.evaluation_record

    def spy(**kwargs):
        recorded.append(kwargs["kind"])
        return service(**kwargs)

    monkeypatch.setattr(gates, "evaluation_record", spy)
    v1 = live(mlflow_models, "1.0.0", seed=61)
    shadowed = candidate(mlflow_models, v1)  # no traffic: the shadow report fails
    first = new_version("1.0.0", thresholds={"decision": 0.5})  # no live version: replay
    to_staging(first)
    for version in (shadowed, first):
        sign_promotion(version)  # three standing sign-offs, voided by the new evidence

    with time_machine.travel(timedelta(days=8)):
        computed = shadow_evaluation_record(version=shadowed)
    submitted = submit(first, "shadow_replay", records=with_timestamps(make_records(), days=2))

    assert recorded == [EvidenceKind.SHADOW, EvidenceKind.SHADOW_REPLAY]
    assert computed.passed is False and submitted.passed is False
    outcome = _recorded_outcome(computed)
    assert outcome == {
        **_recorded_outcome(submitted),
        "void_reasons": {"new evidence: shadow"},
    }
    # the approval for staging and the three sign-offs
    assert outcome["stage"] == "validation" and outcome["approvals_voided"] == 4
    assert outcome["standing_approvals"] == 0 and outcome["sent_back"] and outcome["digest"]
    assert _recorded_outcome(submitted)["void_reasons"] == {"new evidence: shadow_replay"}


def test_a_send_back_refused_because_the_stage_moved_leaves_the_evaluation_standing(
    mlflow_models, monkeypatch, caplog
):
    """``fail_shadow`` raising ``Conflict`` (another transition won the race) is logged, not
    raised: the evaluation is recorded and audited, and the version stays where it is."""
    from governance import lifecycle

    v1 = live(mlflow_models, "1.0.0", seed=61)
    v2 = candidate(mlflow_models, v1)

    def moved(**kwargs):
        raise Conflict(f"{kwargs['version']} is no longer in staging")

    monkeypatch.setattr(lifecycle, "transition", moved)
    with time_machine.travel(timedelta(days=8)), caplog.at_level("WARNING", "governance.gates"):
        evaluation = shadow_evaluation_record(version=v2)

    assert evaluation.passed is False and stage(v2) == "staging"
    assert AuditEvent.objects.filter(
        action="evaluation.recorded", object_id=str(evaluation.pk)
    ).exists()
    assert "automatic fail_shadow of" in caplog.text and "no longer in staging" in caplog.text
