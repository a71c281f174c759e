"""POST/GET /api/v1/models/{name}/versions/: registration against a real MLflow store."""

import pytest

from governance.models import AuditEvent, Lifecycle
from registry.models import ModelCard, ModelVersion

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/hotspot/versions/"


def _state_counts() -> tuple[int, int, int, int]:
    return (
        ModelVersion.objects.count(),
        Lifecycle.objects.count(),
        ModelCard.objects.count(),
        AuditEvent.objects.filter(action="version.registered").count(),
    )


def test_registering_a_version_stores_facts_and_starts_in_development(ci, version_body):
    response = ci.post(URL, version_body("1.2.0"), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["version"] == "1.2.0" and body["stage"] == "development"
    assert body["flavor"] == "sklearn"
    assert body["artifact_digest"].startswith("sha256:") and len(body["artifact_digest"]) == 71
    assert body["feature_list"] == ["f1", "f2", "f3"]
    assert body["thresholds"] == {"decision": 0.5}
    assert body["promoted_at"] is None and body["created_at"]
    assert body["model_card"].endswith("/registry/hotspot/1.2.0/card/")
    assert body["links"]["self"].endswith("/api/v1/models/hotspot/versions/1.2.0/")
    assert body["model_card_content"]["intended_use"] == "Ranking grid cells for review"
    read = ci.get(URL + "1.2.0/").json()
    assert read == body


def test_versions_list_newest_first_with_numeric_order(ci, version_body):
    for version in ["1.9.0", "1.10.0"]:
        assert ci.post(URL, version_body(version), format="json").status_code == 201
    versions = [v["version"] for v in ci.get(URL).json()["results"]]
    assert versions == ["1.10.0", "1.9.0"]


def test_model_card_page_renders_for_logged_in_staff(ci, version_body, client, engineer):
    ci.post(URL, version_body("1.0.0"), format="json")
    client.force_login(engineer)
    page = client.get("/registry/hotspot/1.0.0/card/")
    assert page.status_code == 200
    assert b"Ranking grid cells for review" in page.content


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", "1.2"),
        ("version", "01.0.0"),
        ("training_data_hash", "not-a-hash"),
        ("training_data_start", "yesterday"),
        ("feature_list", []),
        ("feature_list", ["a", "a"]),
        ("thresholds", {"decision": 1.5}),
        ("thresholds", {}),
        ("responsible_engineer", "nobody-here"),
        ("mlflow_uri", "runs:/abc/model"),
        ("mlflow_uri", "models:/does-not-exist/1"),
        ("model_card", {"owners": ["x"]}),
        ("hyperparameters", [1, 2]),
    ],
)
def test_invalid_input_is_400_naming_the_field_and_stores_nothing(ci, version_body, field, value):
    before = _state_counts()
    body = version_body("1.0.0")
    body[field] = value
    response = ci.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"], response.json()
    assert _state_counts() == before


def test_missing_required_fields_are_each_named(ci):
    response = ci.post(URL, {"version": "1.0.0"}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    for field in ["training_data_hash", "feature_list", "thresholds", "model_card"]:
        assert field in errors


def test_range_end_before_start_is_400(ci, version_body):
    body = version_body(training_data_start="2025-06-01", training_data_end="2025-01-01")
    response = ci.post(URL, body, format="json")
    assert response.status_code == 400 and "training_data_end" in response.json()["errors"]


def test_both_or_neither_artifact_reference_is_400(ci, version_body):
    both = version_body(artifact_uri="/tmp/x")
    assert "mlflow_uri" in ci.post(URL, both, format="json").json()["errors"]
    neither = version_body(mlflow_uri="")
    assert "mlflow_uri" in ci.post(URL, neither, format="json").json()["errors"]


def test_duplicate_version_is_409(ci, version_body):
    assert ci.post(URL, version_body("1.0.0"), format="json").status_code == 201
    before = _state_counts()
    response = ci.post(URL, version_body("1.0.0"), format="json")
    assert response.status_code == 409 and "already registered" in response.json()["detail"]
    assert _state_counts() == before


def test_an_mlflow_version_backs_only_one_platform_version(ci, version_body):
    first = version_body("1.0.0")
    assert ci.post(URL, first, format="json").status_code == 201
    response = ci.post(URL, version_body("1.0.1", mlflow_uri=first["mlflow_uri"]), format="json")
    assert response.status_code == 409
    assert "already registered as hotspot 1.0.0" in response.json()["detail"]


def test_non_increasing_version_is_409(ci, version_body):
    assert ci.post(URL, version_body("1.10.0"), format="json").status_code == 201
    response = ci.post(URL, version_body("1.9.5"), format="json")
    assert response.status_code == 409
    assert "must increase" in response.json()["detail"]


def test_unknown_model_is_404_before_body_validation(ci):
    response = ci.post("/api/v1/models/nope/versions/", {}, format="json")
    assert response.status_code == 404
    assert ci.get("/api/v1/models/hotspot/versions/9.9.9/").status_code == 404


def test_registration_needs_register_permission(ci, api_client, version_body):
    pm = api_client("product_manager")
    assert pm.post(URL, version_body("1.0.0"), format="json").status_code == 403
    assert pm.get(URL).status_code == 200
    assert not ModelVersion.objects.exists()


def test_permission_is_checked_before_existence(api_client):
    response = api_client().post("/api/v1/models/nope/versions/", {}, format="json")
    assert response.status_code == 403


def test_registered_facts_are_immutable(ci, version_body):
    from django.core.exceptions import ValidationError

    ci.post(URL, version_body("1.0.0"), format="json")
    version = ModelVersion.objects.get()
    version.thresholds = {"decision": 0.3}
    with pytest.raises(ValidationError, match="immutable"):
        version.save()


def test_idempotent_retry_registers_once(ci, version_body):
    body = version_body("1.0.0")
    first = ci.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="build-42")
    retry = ci.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="build-42")
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert ModelVersion.objects.count() == 1


def test_registration_is_audited_with_the_token_and_digest(ci, version_body):
    ci.post(URL, version_body("1.0.0"), format="json")
    event = AuditEvent.objects.get(action="version.registered")
    assert event.after["stage"] == "development"
    assert event.after["artifact_digest"] == ModelVersion.objects.get().artifact_digest
    assert "(token" in event.actor


def test_declared_bump_must_cover_what_changed(ci, version_body):
    assert ci.post(URL, version_body("1.0.0"), format="json").status_code == 201
    patch = version_body("1.0.1", feature_list=["f1", "f2"])
    response = ci.post(URL, patch, format="json")
    assert response.status_code == 400
    assert "version" in response.json()["errors"]
    retrained = version_body("1.0.1", training_data_hash="sha256:" + "1e" * 32)
    assert ci.post(URL, retrained, format="json").status_code == 400
    assert (
        ci.post(
            URL,
            version_body("1.1.0", **{"training_data_hash": "sha256:" + "1e" * 32}),
            format="json",
        ).status_code
        == 201
    )
