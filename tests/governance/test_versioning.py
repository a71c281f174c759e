"""Versioning rules: the declared bump is checked against what actually changed.

MAJOR = feature-set or model-flavour change; MINOR = retrained on new data (same features);
PATCH = bug fix or threshold change. Compared with the live version, or the newest one before.
"""

from __future__ import annotations

import pytest

from governance.models import Lifecycle, Stage
from governance.versioning import Bump, baseline_version, bump_kind, check_bump
from platform_core.errors import InvalidInput
from tests.factories import ModelVersionFactory, RegisteredModelFactory

pytestmark = pytest.mark.django_db

FEATURES = ["f1", "f2", "f3"]
DATA = "sha256:" + "ab" * 32
NEW_DATA = "sha256:" + "cd" * 32


@pytest.fixture
def model():
    return RegisteredModelFactory(name="hotspot")


@pytest.fixture
def live(model):
    version = ModelVersionFactory(
        model=model, version="1.0.0", feature_list=FEATURES, training_data_hash=DATA
    )
    Lifecycle.objects.filter(version=version).update(stage=Stage.PRODUCTION)  # set-up only
    return version


def check(model, semver, *, features=FEATURES, data=DATA, flavor="sklearn"):
    check_bump(
        model=model,
        semver=semver,
        feature_list=features,
        training_data_hash=data,
        flavor=flavor,
    )


def refusal(model, semver, **changes) -> str:
    with pytest.raises(InvalidInput) as refused:
        check(model, semver, **changes)
    assert list(refused.value.errors) == ["version"]
    return refused.value.errors["version"][0]


def test_the_first_version_of_a_model_is_major_whatever_it_declares(model):
    check(model, "0.1.3", features=["anything"], data=NEW_DATA, flavor="xgboost")
    assert bump_kind(model, "0.1.3") == Bump.MAJOR


def test_a_patch_that_changes_only_thresholds_is_accepted(live):
    check(live.model, "1.0.1")
    assert bump_kind(live.model, "1.0.1") == Bump.PATCH


def test_a_patch_that_changes_the_feature_list_is_refused_naming_the_change(live):
    message = refusal(live.model, "1.0.1", features=["f1", "f2", "f4"])
    assert message.startswith("a PATCH may only fix bugs or adjust thresholds;")
    assert "the feature list changed from [f1, f2, f3] to [f1, f2, f4]" in message
    assert "(added f4; removed f3)" in message
    assert "compared with 1.0.0, the live version" in message
    assert message.endswith("declare 2.0.0")


def test_a_minor_that_changes_the_feature_list_is_refused(live):
    message = refusal(live.model, "1.1.0", features=[*FEATURES, "f4"])
    assert message.startswith("a MINOR may only retrain on new data")
    assert "declare 2.0.0" in message


def test_a_major_may_change_the_feature_list_and_the_flavour(live):
    check(live.model, "2.0.0", features=["g1"], data=NEW_DATA, flavor="xgboost")
    assert bump_kind(live.model, "2.0.0") == Bump.MAJOR


def test_the_feature_list_is_compared_as_a_set(live):
    check(live.model, "1.0.1", features=list(reversed(FEATURES)))


def test_a_changed_model_flavour_requires_major(live):
    for declared in ("1.0.1", "1.1.0"):
        message = refusal(live.model, declared, flavor="xgboost")
        assert "the model flavour changed from sklearn to xgboost" in message
        assert message.endswith("declare 2.0.0")


def test_a_patch_retrained_on_new_data_is_refused_and_a_minor_accepted(live):
    message = refusal(live.model, "1.0.1", data=NEW_DATA)
    assert message.startswith("a PATCH may only fix bugs or adjust thresholds;")
    assert f"the training data changed ({DATA} to {NEW_DATA})" in message
    assert "declare 1.1.0 (MINOR) or 2.0.0" in message
    check(live.model, "1.1.0", data=NEW_DATA)


def test_the_suggested_version_is_above_every_registered_one(live):
    ModelVersionFactory(model=live.model, version="1.2.0", training_data_hash=DATA)
    message = refusal(live.model, "1.0.1", data=NEW_DATA)
    assert message.endswith("declare 1.3.0 (MINOR) or 2.0.0")
    ModelVersionFactory(model=live.model, version="2.0.0", training_data_hash=DATA)
    assert refusal(live.model, "1.0.1", data=NEW_DATA).endswith("declare 3.0.0")


def test_the_live_version_is_the_baseline_not_the_newest_registered(live):
    newer = ModelVersionFactory(model=live.model, version="1.1.0", training_data_hash=NEW_DATA)
    assert baseline_version(live.model, "1.1.1") == live
    assert bump_kind(live.model, "1.1.1") == Bump.MINOR  # against 1.0.0, not 1.1.0
    check(live.model, "1.1.1", data=NEW_DATA)
    Lifecycle.objects.filter(version=live).update(stage=Stage.RETIRED)
    assert baseline_version(live.model, "1.1.1") == newer
    assert bump_kind(live.model, "1.1.1") == Bump.PATCH


def test_without_a_live_version_the_newest_registered_one_is_the_baseline(model):
    ModelVersionFactory(model=model, version="1.0.0", training_data_hash=DATA)
    ModelVersionFactory(model=model, version="1.2.0", training_data_hash=NEW_DATA)
    message = refusal(model, "1.2.1", data=DATA)
    assert "compared with 1.2.0, the latest version" in message
    assert "declare 1.3.0 (MINOR) or 2.0.0" in message


def test_a_registered_versions_bump_is_measured_against_the_versions_before_it(model):
    ModelVersionFactory(model=model, version="1.0.0")
    ModelVersionFactory(model=model, version="1.0.1")
    ModelVersionFactory(model=model, version="1.1.0")
    assert bump_kind(model, "1.0.1") == Bump.PATCH
    assert bump_kind(model, "1.1.0") == Bump.MINOR
    assert bump_kind(model, "1.0.0") == Bump.MAJOR


def test_a_malformed_version_is_refused_on_the_version_field(model):
    with pytest.raises(InvalidInput) as refused:
        bump_kind(model, "1.0")
    assert "not a semantic version" in refused.value.errors["version"][0]


def _three_answers(version):
    """What registration, the lifecycle's shadow rule and the staging time limit each decide."""
    from governance import lifecycle, sla

    return (
        bump_kind(version.model, version.version),
        lifecycle.declared_bump(version),
        Bump.PATCH if sla.is_fast_tracked(version) else "not PATCH",
    )


def test_registration_lifecycle_and_sla_agree_when_a_minor_sits_between_live_and_staged(live):
    # 1.0.0 live, 1.1.0 registered, 1.1.1 staged: MINOR against the live version for all three
    # (before, sla said PATCH and escalated the staging stay 7 days early).
    ModelVersionFactory(model=live.model, version="1.1.0", training_data_hash=NEW_DATA)
    staged = ModelVersionFactory(model=live.model, version="1.1.1", training_data_hash=NEW_DATA)
    registration, shadow_rule, time_limit = _three_answers(staged)
    assert registration == shadow_rule == Bump.MINOR
    assert time_limit == "not PATCH"


def test_registration_lifecycle_and_sla_agree_when_a_newer_major_serves(model):
    # 2.0.0 live and 1.1.1 staged: before, the three answers were PATCH, MAJOR and PATCH.
    ModelVersionFactory(model=model, version="1.1.0", training_data_hash=DATA)
    staged = ModelVersionFactory(model=model, version="1.1.1", training_data_hash=DATA)
    newer = ModelVersionFactory(model=model, version="2.0.0", training_data_hash=DATA)
    Lifecycle.objects.filter(version=newer).update(stage=Stage.PRODUCTION)  # set-up only
    registration, shadow_rule, time_limit = _three_answers(staged)
    assert registration == shadow_rule == time_limit == Bump.PATCH
