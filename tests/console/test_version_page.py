"""The version page: facts as tables, gate reports, sign-offs, history in words, the comparison
with another version, per-model grants, and a query count that does not grow with the data."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from governance import services
from governance.models import Evaluation, EvidenceKind, ValidationPolicy
from tests.factories import RegisteredModelFactory
from tests.governance.lifecycle_helpers import SYSTEM, evidence, new_version, person, to_staging

pytestmark = pytest.mark.django_db


def login(client, username):
    client.force_login(get_user_model().objects.get(username=username))


def url(version, other=""):
    path = reverse("console:version", args=[version.model.name, version.version])
    return f"{path}?with={other}" if other else path


def gate_evidence(version, *, auc: float, passed: bool) -> Evaluation:
    policy, _ = ValidationPolicy.objects.get_or_create(
        model=version.model, version=3, defaults={"values": {"auc_min": 0.7}}
    )
    evaluation = evidence(version, EvidenceKind.VALIDATION, passed=passed)
    Evaluation.objects.filter(pk=evaluation.pk).update(
        policy=policy,
        report={
            "passed": passed,
            "policy_version": 3,
            "gates": [
                {
                    "gate": "metrics",
                    "passed": passed,
                    "values": {"auc": auc, "n": 400},
                    "thresholds": {"auc_min": 0.7},
                    "reasons": [] if passed else [f"AUC {auc:.4f} is below the minimum 0.7"],
                }
            ],
        },
    )
    return evaluation


def test_facts_gates_approvals_and_history_in_words(client):
    version = new_version(
        "1.0.0", hyperparameters={"C": 0.123456789, "penalty": "l2"}, metrics={"auc": 0.8123456}
    )
    to_staging(version)
    gate_evidence(version, auc=0.8123456, passed=True)
    person("auditor", "ada")
    login(client, "ada")

    page = client.get(url(version)).content.decode()

    assert '<th scope="row">C</th><td>0.1235</td>' in page  # rounded, as a table row
    assert "{&#x27;C&#x27;" not in page and '{"C"' not in page  # no raw dict
    assert "validation policy v3" in page and "✓ passed" in page and "0.8123" in page
    assert "the-lead" in page and "approve_for_staging" in page  # who signed, with when
    assert "moved version 1.0.0 from development to validation (submit for validation)" in page
    assert "Testing" in page  # the model card's intended use


def test_compare_marks_every_difference_in_words(client):
    model = RegisteredModelFactory(name="hotspot")
    old = new_version(
        "1.0.0",
        model=model,
        feature_list=["f1", "f2", "f3"],
        hyperparameters={"C": 1.0},
        thresholds={"decision": 0.5},
    )
    new = new_version(
        "2.0.0",
        model=model,
        feature_list=["f1", "f2", "f4"],
        hyperparameters={"C": 0.5},
        thresholds={"decision": 0.5},
    )
    gate_evidence(old, auc=0.8, passed=True)
    gate_evidence(new, auc=0.6, passed=False)
    person("ml_lead", "lee")
    login(client, "lee")

    page = client.get(url(new, "1.0.0")).content.decode()

    assert '<option value="1.0.0" selected>' in page
    assert "+ added</strong> in 2.0.0: <code>f4</code>" in page
    assert "\N{MINUS SIGN} removed</strong> in 2.0.0: <code>f3</code>" in page
    assert '<tr class="diff"><th scope="row">C</th><td>0.5</td><td>1</td>' in page
    assert '<th scope="row">decision</th><td>0.5</td><td>0.5</td>' in page  # same: no cue
    assert "validation / metrics</th><td>failed</td><td>passed</td>" in page
    assert "≠ changed" in page


def test_unknown_other_version_is_said_not_a_500(client):
    version = new_version("1.0.0")
    person("ml_lead", "lee")
    login(client, "lee")
    page = client.get(url(version, "9.9.9"))
    assert page.status_code == 200 and "has no version 9.9.9" in page.content.decode()


def test_per_model_grants_hide_other_models_with_404(client):
    mine = new_version("1.0.0", model=RegisteredModelFactory(name="mine"))
    theirs = new_version("1.0.0", model=RegisteredModelFactory(name="theirs"))
    services.role_grant(username="scoped", roles=["ml_engineer"], model_name="mine", actor=SYSTEM)
    login(client, "scoped")

    assert client.get(url(mine)).status_code == 200
    assert client.get(url(theirs)).status_code == 404
    assert client.get(reverse("console:version", args=["mine", "7.0.0"])).status_code == 404


def test_registry_version_page_links_here(client):
    version = new_version("1.0.0")
    person("ml_lead", "lee")
    login(client, "lee")
    page = client.get(version.get_absolute_url()).content.decode()
    assert url(version) in page


@pytest.mark.parametrize("count", [2, 12])
def test_query_count_does_not_grow_with_versions_and_evidence(
    client, django_assert_max_num_queries, count
):
    model = RegisteredModelFactory(name="many")
    versions = [new_version(f"1.{i}.0", model=model) for i in range(count)]
    for version in versions[-2:]:
        for _ in range(count):
            gate_evidence(version, auc=0.8, passed=True)
    person("ml_lead", "lee")
    login(client, "lee")

    with django_assert_max_num_queries(21):  # 8 of them: the My work count in the nav
        response = client.get(url(versions[-1], versions[-2].version))
    assert response.status_code == 200
