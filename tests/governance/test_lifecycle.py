"""Every edge of the lifecycle table (docs/architecture.md §4), and the forbidden ones."""

import pytest

from governance import lifecycle
from governance.audit import Actor
from governance.models import Archive, AuditEvent, EvidenceKind, Lifecycle
from platform_core.errors import Conflict, Forbidden
from tests.governance.lifecycle_helpers import (
    SYSTEM,
    approve,
    evidence,
    live_and_staged,
    new_version,
    person,
    promote_successor,
    sign_promotion,
    stage,
    step,
    to_production_first,
    to_staging,
    to_validation,
)

pytestmark = pytest.mark.django_db


def auto(version, name, comment=""):
    return lifecycle.transition(
        version=version, name=name, actor=Actor.system("tests"), automatic=True, comment=comment
    )


def test_submit_for_validation_lists_missing_unit_tests_and_peer_review():
    version = new_version()
    with pytest.raises(Conflict) as refused:
        step(version, "submit_for_validation", actor=person("ci"))
    assert refused.value.reasons == [
        "no unit_tests evidence has been submitted",
        "needs an approval from a ml_engineer",
    ]
    to_validation(version)
    assert stage(version) == "validation"


def test_failing_unit_tests_block_submission():
    version = new_version()
    evidence(version, EvidenceKind.UNIT_TESTS, passed=False)
    approve(version, "submit_for_validation", "ml_engineer")
    with pytest.raises(Conflict, match="unmet") as refused:
        step(version, "submit_for_validation", actor=person("ci"))
    assert "the latest unit_tests evidence failed" in refused.value.reasons[0]


def test_responsible_engineer_never_approves_their_own_version():
    version = new_version()
    person("ml_engineer", version.responsible_engineer.username)
    with pytest.raises(Forbidden, match="you are its responsible engineer"):
        approve(
            version, "submit_for_validation", "ml_engineer", version.responsible_engineer.username
        )


def test_ci_accounts_never_approve():
    version = new_version()
    person("ci", "robot")
    with pytest.raises(Forbidden):
        approve(version, "submit_for_validation", "ml_engineer", "robot")


def test_one_person_fills_at_most_one_role_per_transition():
    version = new_version()
    to_staging(version)
    person("ethics_officer", "both-hats")
    approve(version, "promote", "ml_lead", "both-hats")
    with pytest.raises(Conflict, match="one person fills one role"):
        approve(version, "promote", "ethics_officer", "both-hats")


def test_a_rejection_blocks_until_new_evidence_starts_a_new_round():
    version = new_version()
    evidence(version, EvidenceKind.UNIT_TESTS)
    approve(version, "submit_for_validation", "ml_engineer", "reviewer-a")
    approve(version, "submit_for_validation", "ml_engineer", "reviewer-b", decision="reject")
    with pytest.raises(Conflict) as refused:
        step(version, "submit_for_validation", actor=person("ci"))
    assert any("rejected by reviewer-b" in r for r in refused.value.reasons)
    evidence(version, EvidenceKind.UNIT_TESTS)  # new round: every earlier decision is void
    approve(version, "submit_for_validation", "ml_engineer", "reviewer-b")
    step(version, "submit_for_validation", actor=person("ci"))
    assert stage(version) == "validation"


def test_new_evidence_voids_earlier_approvals():
    version = new_version()
    evidence(version, EvidenceKind.UNIT_TESTS)
    approval = approve(version, "submit_for_validation", "ml_engineer")
    evidence(version, EvidenceKind.UNIT_TESTS)
    approval.refresh_from_db()
    assert approval.voided_at is not None and "new evidence" in approval.voided_reason
    with pytest.raises(Conflict, match="unmet"):
        step(version, "submit_for_validation", actor=person("ci"))


def test_approvals_are_only_taken_in_the_transitions_source_stage():
    version = new_version()
    with pytest.raises(Conflict, match="while the version is in staging"):
        approve(version, "promote", "ml_lead")


def test_approve_for_staging_needs_passing_validation_and_the_ml_lead():
    version = new_version()
    to_validation(version)
    evidence(version, EvidenceKind.VALIDATION, passed=False)
    with pytest.raises(Conflict) as refused:
        step(version, "approve_for_staging", actor=person("ci"))
    assert "the latest validation evidence failed" in refused.value.reasons[0]
    assert "needs an approval from a ml_lead" in refused.value.reasons
    evidence(version, EvidenceKind.VALIDATION)
    approve(version, "approve_for_staging", "ml_lead")
    step(version, "approve_for_staging", actor=person("ci"))
    assert stage(version) == "staging"


def test_fail_validation_and_fail_shadow_are_automatic_only():
    version = new_version()
    to_validation(version)
    with pytest.raises(Forbidden, match="automatically"):
        step(version, "fail_validation")
    auto(version, "fail_validation")
    assert stage(version) == "development"
    to_staging(new_version("2.0.0", model=version.model))
    staged = version.model.versions.get(version="2.0.0")
    auto(staged, "fail_shadow")
    assert stage(staged) == "validation"


def test_first_version_promotion_needs_shadow_replay_and_three_sign_offs():
    version = new_version()
    to_staging(version)
    with pytest.raises(Conflict) as refused:
        step(version, "promote", actor=person("ci"))
    reasons = refused.value.reasons
    assert any("shadow_replay" in r for r in reasons)
    for role in ("ml_lead", "ethics_officer", "product_manager"):
        assert f"needs an approval from a {role}" in reasons
    evidence(version, EvidenceKind.SHADOW_REPLAY)
    sign_promotion(version)
    step(version, "promote", actor=person("ci"))
    record = Lifecycle.objects.get(version=version)
    assert record.stage == "production" and record.promoted_at is not None


def test_promotion_retires_the_previous_live_version_into_warm_standby():
    v1 = new_version("1.0.0")
    to_production_first(v1)
    v2 = promote_successor(v1, "1.1.0")
    assert stage(v2) == "production"
    old = Lifecycle.objects.get(version=v1)
    assert old.stage == "retired" and old.archive == Archive.WARM
    assert Lifecycle.objects.get(version=v2).superseded == v1
    serving = Lifecycle.objects.filter(version__model=v1.model, stage__in=["production"])
    assert serving.count() == 1


def test_minor_version_waits_for_seven_days_of_shadow_mode():
    _, v2 = live_and_staged("1.1.0")
    sign_promotion(v2)
    with pytest.raises(Conflict) as refused:
        step(v2, "promote", actor=person("ci"))
    assert any("shadow period ends" in r for r in refused.value.reasons)
    assert any("shadow evaluation" in r for r in refused.value.reasons)


def test_patch_version_is_fast_tracked_without_shadow():
    _, patch = live_and_staged("1.0.1")
    sign_promotion(patch)
    step(patch, "promote", actor=person("ci"))
    assert stage(patch) == "production"


def test_only_the_last_three_serving_versions_stay_in_warm_standby():
    previous = new_version("1.0.0")
    to_production_first(previous)
    versions = [previous]
    for text in ["1.0.1", "1.0.2", "1.0.3", "1.0.4"]:
        versions.append(promote_successor(versions[-1], text))
    archive = {v.version: Lifecycle.objects.get(version=v).archive for v in versions[:-1]}
    assert archive == {"1.0.0": "cold", "1.0.1": "warm", "1.0.2": "warm", "1.0.3": "warm"}


def test_monitoring_degraded_and_resolution():
    version = new_version()
    to_production_first(version)
    with pytest.raises(Forbidden):
        step(version, "begin_monitoring")
    auto(version, "begin_monitoring")
    auto(version, "mark_degraded")
    with pytest.raises(Conflict, match="unmet") as refused:
        step(version, "resolve")
    assert "justification" in refused.value.reasons[0]
    step(version, "resolve", comment="PSI spike was a data-feed outage, fixed upstream")
    assert stage(version) == "monitoring"
    auto(version, "mark_degraded")
    step(version, "approve_retraining")
    assert stage(version) == "retraining"


def test_production_goes_degraded_directly_on_an_alert():
    version = new_version()
    to_production_first(version)
    auto(version, "mark_degraded")
    assert stage(version) == "degraded"


def test_rollback_restores_the_superseded_version_in_the_same_transaction():
    v1 = new_version("1.0.0")
    to_production_first(v1)
    v2 = promote_successor(v1, "1.1.0")
    auto(v2, "begin_monitoring")
    step(v2, "start_rollback", comment="fairness drift on northgate")
    assert stage(v2) == "rollback" and stage(v1) == "production"
    step(v2, "complete_rollback", comment="v1 verified serving")
    rolled = Lifecycle.objects.get(version=v2)
    assert rolled.stage == "retired" and rolled.archive == Archive.COLD
    assert rolled.retired_reason == "v1 verified serving"
    actions = list(
        AuditEvent.objects.filter(action__startswith="lifecycle.").values_list("action", flat=True)
    )
    assert actions[-3:] == [
        "lifecycle.restore",
        "lifecycle.start_rollback",
        "lifecycle.complete_rollback",
    ]


def test_rollback_without_a_warm_standby_version_is_refused():
    version = new_version()
    to_production_first(version)
    with pytest.raises(Conflict) as refused:
        step(version, "start_rollback", comment="bias spike")
    assert "no warm-standby version" in refused.value.reasons[0]
    assert stage(version) == "production"


def test_ml_lead_can_retire_a_serving_version_with_a_reason():
    version = new_version()
    to_production_first(version)
    step(version, "retire", comment="programme ended")
    record = Lifecycle.objects.get(version=version)
    assert record.stage == "retired" and record.archive == Archive.WARM


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("promote", "development"),
        ("approve_for_staging", "development"),
        ("resolve", "development"),
        ("start_rollback", "development"),
        ("complete_rollback", "development"),
        ("retire", "development"),
        ("approve_retraining", "development"),
    ],
)
def test_transitions_from_the_wrong_stage_are_409(name, source):
    version = new_version()
    assert stage(version) == source
    with pytest.raises(Conflict, match="not possible from stage development"):
        step(version, name, comment="x")


@pytest.mark.parametrize("name", ["restore", "begin_monitoring", "mark_degraded"])
def test_automatic_transitions_are_never_taken_on_request(name):
    with pytest.raises(Forbidden, match="automatically"):
        step(new_version(), name)


def test_roles_without_the_permission_get_403_before_state_is_considered():
    version = new_version()
    with pytest.raises(Forbidden):
        step(version, "promote", actor=person("product_manager"))
    with pytest.raises(Forbidden):
        step(version, "start_rollback", actor=person("ci"), comment="x")


def test_every_transition_is_audited_with_before_and_after():
    version = new_version()
    to_validation(version)
    event = AuditEvent.objects.get(action="lifecycle.submit_for_validation")
    assert event.before["stage"] == "development" and event.after["stage"] == "validation"
    assert event.actor.startswith("the-ci")
    assert SYSTEM.label == "system:tests"


def test_a_staged_version_cannot_replace_a_live_version_it_never_shadowed():
    v1 = new_version("1.0.0")
    to_production_first(v1)
    a = new_version("1.0.1", model=v1.model)
    b = new_version("1.0.2", model=v1.model)
    for candidate in (a, b):
        to_staging(candidate)
        sign_promotion(candidate)
    step(b, "promote", actor=person("ci"))
    with pytest.raises(Conflict) as refused:
        step(a, "promote", actor=person("ci"))
    assert "live version changed since this version entered staging" in refused.value.reasons[0]
