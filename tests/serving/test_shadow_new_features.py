"""Shadowing a MAJOR that needs features the live version does not use.

While 2.0.0 (f1..f4) is staged behind a live 1.x (f1..f3), a request may carry f4 beside the live
features: 1.x scores f1..f3 exactly as before, 2.0.0 is shadow-scored on f1..f4 for the
instances that carried f4, and the others are served and simply not shadow-scored.
"""

import pytest

from governance.audit import Actor
from serving import router, shadow
from serving.readiness import serving_status
from tests.governance.lifecycle_helpers import step
from tests.serving.helpers import (
    FEATURES,
    hold_shadow_scoring,
    instances,
    live,
    log_to_store,
    predict,
    pyfunc_scores,
    real_version,
    staged,
    warm,
)

pytestmark = pytest.mark.django_db
WIDE = [*FEATURES, "f4"]


def with_f4(rows: list[dict], start: float = 0.5) -> list[dict]:
    return [{**row, "f4": start - i * 0.25} for i, row in enumerate(rows)]


def major_behind_live(mlflow_models):
    v1 = live(mlflow_models, "1.0.0", seed=71)
    v2 = staged(mlflow_models, v1.model, "2.0.0", seed=72, feature_list=WIDE)
    return v1, v2


def logged(ingested, version: str) -> list[dict]:
    return [r for call in ingested if call["version"] == version for r in call["records"]]


def test_a_request_with_the_majors_features_is_served_by_live_and_shadow_scored_by_the_major(
    mlflow_models, ci, ingested
):
    v1, v2 = major_behind_live(mlflow_models)
    warm(ci, v1.model.name)
    rows = with_f4(instances(3))

    union = predict(ci, v1.model.name, rows).json()
    plain = predict(ci, v1.model.name, instances(3)).json()
    assert shadow.drain()
    log_to_store()

    assert union["version"] == "1.0.0"
    union_scores = [p["score"] for p in union["predictions"]]
    assert union_scores == [p["score"] for p in plain["predictions"]]  # f4 changes nothing live
    assert union_scores == pytest.approx(pyfunc_scores(v1, rows))
    live_records = logged(ingested, "1.0.0")
    assert all("f4" not in r for r in live_records)  # the live version's own features
    major = logged(ingested, "2.0.0")
    assert [r["prediction_id"] for r in major] == [p["prediction_id"] for p in union["predictions"]]
    assert [r["f4"] for r in major] == [row["f4"] for row in rows]
    assert [r["score"] for r in major] == pytest.approx(pyfunc_scores(v2, rows))
    assert [r["score"] for r in major] != pytest.approx(union_scores)  # f4 does weigh in 2.0.0


def test_a_request_without_the_new_feature_is_served_and_not_shadow_scored(
    mlflow_models, ci, ingested
):
    v1, _ = major_behind_live(mlflow_models)
    warm(ci, v1.model.name)

    response = predict(ci, v1.model.name, instances(2))
    assert shadow.drain()
    log_to_store()

    assert response.status_code == 200 and response.json()["version"] == "1.0.0"
    assert [c["version"] for c in ingested] == ["1.0.0"]
    assert shadow.counts(v1.model.name)["2.0.0"] == {"scored": 0, "not_carried": 2, "failed": 0}
    entry = serving_status(load=False)["models"][v1.model.name]
    assert entry["shadow_features"] == ["f4"]
    assert entry["shadow_counts"]["2.0.0"]["not_carried"] == 2


def test_only_the_instances_carrying_the_new_features_are_shadow_scored(
    mlflow_models, ci, ingested
):
    v1, v2 = major_behind_live(mlflow_models)
    warm(ci, v1.model.name)
    rows = instances(4)
    rows[0]["f4"], rows[2]["f4"] = 0.7, -1.2
    rows[3]["f4"] = None  # null: not carried
    sensitive = [{"district": d} for d in ("north", "south", "east", "west")]

    body = predict(ci, v1.model.name, rows, sensitive=sensitive).json()
    assert shadow.drain()
    log_to_store()

    ids = [p["prediction_id"] for p in body["predictions"]]
    assert len(logged(ingested, "1.0.0")) == 4
    major = logged(ingested, "2.0.0")
    assert [r["prediction_id"] for r in major] == [ids[0], ids[2]]
    assert [r["sensitive.district"] for r in major] == ["north", "east"]
    assert [r["score"] for r in major] == pytest.approx(pyfunc_scores(v2, [rows[0], rows[2]]))
    assert shadow.counts(v1.model.name)["2.0.0"] == {"scored": 2, "not_carried": 2, "failed": 0}


def test_queued_requests_with_and_without_the_new_feature_are_logged_per_request(
    mlflow_models, ci, ingested, monkeypatch
):
    v1, v2 = major_behind_live(mlflow_models)
    warm(ci, v1.model.name)
    entered, gate, calls = hold_shadow_scoring(monkeypatch, v2)
    batches = [with_f4(instances(2, start=2)), instances(3, start=3), with_f4(instances(2), -1)]
    batches[2][1].pop("f4")
    first = with_f4(instances(1))
    bodies = [predict(ci, v1.model.name, first).json()]
    assert entered.wait(5)  # the shadow thread holds the first request
    bodies += [predict(ci, v1.model.name, rows).json() for rows in batches]
    batches.insert(0, first)
    gate.set()
    assert shadow.drain()
    log_to_store()

    assert calls == [1, 3]  # the queued requests' carrying rows in one model call
    scored = {r["prediction_id"]: r["score"] for r in logged(ingested, "2.0.0")}
    expected = {
        p["prediction_id"]: row
        for body, rows in zip(bodies, batches, strict=True)
        for p, row in zip(body["predictions"], rows, strict=True)
        if "f4" in row
    }
    assert set(scored) == set(expected)
    assert [scored[i] for i in expected] == pytest.approx(pyfunc_scores(v2, [*expected.values()]))


def test_a_feature_neither_version_uses_is_still_a_400_and_live_features_still_required(
    mlflow_models, ci
):
    v1, _ = major_behind_live(mlflow_models)
    unknown = with_f4(instances(1))
    unknown[0]["f9"] = 1.0
    missing = with_f4(instances(1))
    del missing[0]["f2"]

    unknown_answer = predict(ci, v1.model.name, unknown)
    missing_answer = predict(ci, v1.model.name, missing)

    assert unknown_answer.status_code == 400
    assert "unexpected features: f9" in str(unknown_answer.json())
    assert "f4" not in str(unknown_answer.json())
    assert missing_answer.status_code == 400
    assert "missing features: f2" in str(missing_answer.json())


def test_a_given_shadow_feature_must_be_a_number(mlflow_models, ci):
    v1, _ = major_behind_live(mlflow_models)
    rows = with_f4(instances(2))
    rows[1]["f4"] = "high"

    answer = predict(ci, v1.model.name, rows)

    assert answer.status_code == 400
    assert "instances[1].f4" in str(answer.json()) and "must be a number" in str(answer.json())


def test_the_new_features_are_accepted_before_the_major_has_loaded(mlflow_models, ci):
    v1, _ = major_behind_live(mlflow_models)  # cold: the shadow loads in the background

    answer = predict(ci, v1.model.name, with_f4(instances(2)))

    assert answer.status_code == 200 and answer.json()["version"] == "1.0.0"


def test_without_a_staged_version_using_them_extra_features_are_unexpected(mlflow_models, ci):
    v1 = live(mlflow_models, "1.0.0", seed=71)
    staged(mlflow_models, v1.model, "1.1.0", seed=73)  # a MINOR: the same features

    answer = predict(ci, v1.model.name, with_f4(instances(1)))

    assert answer.status_code == 400
    assert "unexpected features: f4" in str(answer.json())
    assert router.cached_route(v1.model.name).shadow_features == ()  # the plain validation


def test_a_minor_and_a_major_staged_together_each_score_what_they_can(mlflow_models, ci, ingested):
    v1, v2 = major_behind_live(mlflow_models)
    minor = staged(mlflow_models, v1.model, "1.1.0", seed=73)
    warm(ci, v1.model.name)
    rows = [*with_f4(instances(1)), *instances(1, start=1)]

    body = predict(ci, v1.model.name, rows).json()
    assert shadow.drain()
    log_to_store()

    ids = [p["prediction_id"] for p in body["predictions"]]
    assert [r["prediction_id"] for r in logged(ingested, "1.1.0")] == ids
    assert [r["score"] for r in logged(ingested, "1.1.0")] == pytest.approx(
        pyfunc_scores(minor, rows)
    )
    assert all("f4" not in r for r in logged(ingested, "1.1.0"))
    assert [r["prediction_id"] for r in logged(ingested, "2.0.0")] == ids[:1]
    assert [r["score"] for r in logged(ingested, "2.0.0")] == pytest.approx(
        pyfunc_scores(v2, rows[:1])
    )


def test_the_gateway_counts_are_summed_over_processes_and_kept_per_stay_in_staging():
    import json
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from serving import shadow_counts

    staged_at = datetime(2026, 1, 5, 9, 30, 0, 123456, tzinfo=UTC)
    ref = SimpleNamespace(version="2.0.0", id=5, staged_at=shadow_counts.stay_key(staged_at))
    shadow_counts.add("scoring", ref, scored=3, not_carried=2)
    shadow_counts.add("scoring", ref, not_carried=1)
    assert shadow_counts.flush() == 1
    folder = shadow_counts.directory() / f"5-{ref.staged_at}"
    (folder / "another-process.json").write_text(json.dumps({"scored": 1, "failed": 4}))

    totals = shadow_counts.stay_totals(version_id=5, staged_at=staged_at)
    staged_again = shadow_counts.stay_totals(version_id=5, staged_at=staged_at + timedelta(9))

    assert totals == {"scored": 4, "not_carried": 3, "failed": 4}
    assert staged_again is None  # a new stay in staging starts from nothing
    assert shadow_counts.flush() == 0  # nothing changed since


def test_the_hourly_task_removes_the_counts_of_a_stay_that_is_over(mlflow_models, ci, enqueued):
    from governance.models import Lifecycle
    from serving import shadow_counts, tasks

    v1, v2 = major_behind_live(mlflow_models)
    warm(ci, v1.model.name)
    predict(ci, v1.model.name, with_f4(instances(2)))
    assert shadow.drain()
    log_to_store()
    [folder] = shadow_counts.directory().iterdir()

    tasks.record_shadow_evaluations.apply().get()
    kept = folder.is_dir()
    Lifecycle.objects.filter(version=v2).update(stage="validation")  # sent back meanwhile
    tasks.record_shadow_evaluations.apply().get()

    assert kept and not folder.exists()


def test_features_of_a_version_that_stopped_being_shadowed_are_accepted_and_ignored(
    mlflow_models, ci
):
    """A MAJOR's shadow failed (or it was rolled back): clients already sending its features
    keep being served by the live version instead of getting a 400 at that very moment."""
    v1 = live(mlflow_models, "1.0.0", seed=71)
    major = staged(mlflow_models, v1.model, "2.0.0", seed=72, feature_list=WIDE)
    step(major, "fail_shadow", actor=Actor.system("tests"), automatic=True)  # to validation
    real_version(mlflow_models, "3.0.0", model=v1.model, seed=74, feature_list=[*FEATURES, "f9"])
    rows = with_f4(instances(2))

    answer = predict(ci, v1.model.name, rows)
    # f9 belongs only to 3.0.0, still in development: callers cannot have been sent to it
    unknown = predict(ci, v1.model.name, [{**instances(1)[0], "f9": 1.0}])

    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["version"] == "1.0.0"
    assert [p["score"] for p in body["predictions"]] == pytest.approx(
        pyfunc_scores(v1, instances(2))
    )
    assert unknown.status_code == 400
    assert "unexpected features: f9" in str(unknown.json())
