"""The shadow evaluation on logged traffic: agreement, KS, performance, fairness, the period."""

from datetime import timedelta

import numpy as np
import pytest
import time_machine

from governance.models import Evaluation, EvidenceKind
from serving import log, shadow
from serving.shadow_evaluation import shadow_evaluate, shadow_evaluation_record
from tests.governance.lifecycle_helpers import stage
from tests.serving.helpers import live, predict, staged, warm

pytestmark = pytest.mark.django_db
ingest = pytest.importorskip("monitoring.ingest")


def traffic(n: int = 200, seed: int = 7):
    """n instances twice: once per district, so both groups see exactly the same cases."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    labels = (X[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    rows = [dict(zip(("f1", "f2", "f3"), map(float, x), strict=True)) for x in X]
    return rows * 2, [{"district": d} for d in ["north"] * n + ["south"] * n], [*labels, *labels]


def serve_and_label(ci, name, committed, *, labelled: bool = True) -> None:
    from governance.audit import Actor

    rows, sensitive, labels = traffic()
    warm(ci, name)  # the shadow version loads off the request path
    ids = []
    for start in range(0, len(rows), 100):
        body = predict(
            ci, name, rows[start : start + 100], sensitive=sensitive[start : start + 100]
        ).json()
        ids += [p["prediction_id"] for p in body["predictions"]]
    shadow.drain()
    with committed():
        log.flush()
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
