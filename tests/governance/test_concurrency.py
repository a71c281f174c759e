"""Races on PostgreSQL: row locks and the FSM's optimistic check leave exactly one winner."""

import pytest

from governance import audit
from governance.models import Lifecycle
from platform_core.errors import Conflict
from tests.concurrency import race as threads_race
from tests.governance.lifecycle_helpers import (
    live_and_staged,
    new_version,
    person,
    sign_promotion,
    step,
    to_production_first,
    to_staging,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
THREADS = 8


def race(target) -> list[str]:
    """ "won" or "conflict" per thread; any other exception fails the test."""
    results, errors = threads_race(target, THREADS)
    for error in errors:
        if not isinstance(error, Conflict):
            raise error
    return ["won"] * len(results) + ["conflict"] * len(errors)


def test_many_threads_racing_one_promotion_produce_exactly_one_winner():
    _, patch = live_and_staged("1.0.1")
    sign_promotion(patch)
    ci = person("ci")
    outcomes = race(lambda i: step(patch, "promote", actor=ci))
    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["won"]
    stages = dict(Lifecycle.objects.values_list("version__version", "stage"))
    assert stages == {"1.0.0": "retired", "1.0.1": "production"}
    assert audit.verify().valid


def test_racing_promotions_of_different_versions_have_exactly_one_winner():
    v1 = new_version("1.0.0")
    to_production_first(v1)
    candidates = [new_version(f"1.0.{i + 1}", model=v1.model) for i in range(THREADS)]
    for candidate in candidates:
        to_staging(candidate)
        sign_promotion(candidate)
    ci = person("ci")
    outcomes = race(lambda i: step(candidates[i], "promote", actor=ci))
    assert sorted(outcomes) == ["conflict"] * (THREADS - 1) + ["won"]
    serving = Lifecycle.objects.filter(
        version__model=v1.model, stage__in=["production", "monitoring", "degraded", "retraining"]
    )
    assert serving.count() == 1
    assert audit.verify().valid
