"""Writing the facts of models and versions.

These functions know nothing of lifecycle or audit: the governance services call them inside the
transaction that also records the decision and the audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction

from . import mlflow_bridge
from .errors import Conflict, InvalidInput, NotFound, Unavailable
from .models import ModelCard, ModelVersion, PendingArtifact, RegisteredModel, validate_model_name
from .semver import SemVer

CARD_FIELDS = (
    "intended_use",
    "out_of_scope_uses",
    "training_data",
    "evaluation_data",
    "metrics",
    "fairness_analysis",
    "ethical_considerations",
    "caveats_and_limitations",
    "owners",
)


@dataclass
class VersionSpec:
    """A validated registration request, before anything is written."""

    version: str
    training_data_hash: str
    training_data_start: date
    training_data_end: date
    responsible_engineer: str
    feature_list: list[str]
    thresholds: dict[str, Any]
    mlflow_uri: str = ""
    artifact_uri: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    model_card: dict[str, Any] = field(default_factory=dict)
    ethics_audit_date: date | None = None
    created_at: datetime | None = None


def model_create(*, name: str, description: str = "", created_by=None) -> RegisteredModel:
    try:
        validate_model_name(name)
    except ValidationError as exc:
        raise InvalidInput({"name": exc.messages}) from exc
    if RegisteredModel.objects.filter(name=name).exists():
        raise Conflict(f"a model named '{name}' already exists")
    return RegisteredModel.objects.create(name=name, description=description, created_by=created_by)


def model_get(name: str, *, lock: bool = False) -> RegisteredModel:
    qs = RegisteredModel.objects.select_for_update() if lock else RegisteredModel.objects
    try:
        return qs.get(name=name)
    except RegisteredModel.DoesNotExist:
        raise NotFound(f"no model named '{name}'") from None


def version_get(model_name: str, version: str) -> ModelVersion:
    try:
        return ModelVersion.objects.select_related("model", "responsible_engineer").get(
            model__name=model_name, version=version
        )
    except ModelVersion.DoesNotExist:
        raise NotFound(f"model '{model_name}' has no version '{version}'") from None


def check_spec(
    model: RegisteredModel,
    spec: VersionSpec,
    *,
    engineer_problem: Callable[[Any, RegisteredModel], str | None] | None = None,
) -> tuple[SemVer, Any]:
    """Semantic checks that need the database: 400 for bad values, 409 for order and duplicates.

    ``engineer_problem`` lets the caller (governance, which knows roles) refuse an engineer.
    """
    errors: dict[str, str] = {}
    try:
        semver = SemVer.parse(spec.version)
    except ValueError as exc:
        raise InvalidInput({"version": str(exc)}) from exc
    if spec.training_data_start > spec.training_data_end:
        errors["training_data_end"] = "must not be before training_data_start"
    if not spec.feature_list:
        errors["feature_list"] = "must list at least one feature"
    elif len(set(spec.feature_list)) != len(spec.feature_list):
        errors["feature_list"] = "lists a feature more than once"
    decision = spec.thresholds.get("decision")
    if (
        not isinstance(decision, int | float)
        or isinstance(decision, bool)
        or not 0 <= decision <= 1
    ):
        errors["thresholds"] = "must contain 'decision', a number between 0 and 1"
    if bool(spec.mlflow_uri) == bool(spec.artifact_uri):
        errors["mlflow_uri"] = "give exactly one of mlflow_uri (models:/NAME/N) and artifact_uri"
    elif spec.mlflow_uri:
        try:
            mlflow_bridge.parse_models_uri(spec.mlflow_uri)
        except ValueError as exc:
            errors["mlflow_uri"] = str(exc)
    if not spec.model_card.get("intended_use"):
        errors["model_card"] = "must state intended_use"
    engineer = get_user_model().objects.filter(username=spec.responsible_engineer).first()
    if engineer is None:
        errors["responsible_engineer"] = (
            f"no user '{spec.responsible_engineer}': create them with manage.py grant_role"
        )
    elif engineer_problem is not None and (problem := engineer_problem(engineer, model)):
        errors["responsible_engineer"] = problem
    if errors:
        raise InvalidInput(errors)
    ensure_increasing(model, semver)
    if spec.mlflow_uri and not spec.artifact_uri:
        ensure_unclaimed(*mlflow_bridge.parse_models_uri(spec.mlflow_uri))
    return semver, engineer


def ensure_unclaimed(mlflow_name: str, mlflow_version: str) -> None:
    """One MLflow model version backs at most one platform version: its tags mirror one stage."""
    owner = (
        ModelVersion.objects.filter(mlflow_name=mlflow_name, mlflow_version=mlflow_version)
        .select_related("model")
        .first()
    )
    if owner is not None:
        raise Conflict(
            f"models:/{mlflow_name}/{mlflow_version} is already registered as {owner}; log a new "
            "MLflow model version, or send artifact_uri to have the platform log a copy"
        )


def ensure_increasing(model: RegisteredModel, semver: SemVer) -> None:
    latest = model.versions.newest_first().first()
    if latest is None:
        return
    if latest.semver == semver:
        raise Conflict(f"{model.name} {semver} is already registered")
    if semver < latest.semver:
        raise Conflict(
            f"versions must increase: {semver} is not greater than the latest, {latest.version}"
        )


def materialise_artifact(model: RegisteredModel, spec: VersionSpec) -> mlflow_bridge.ResolvedModel:
    """Make sure MLflow holds the artifact, then resolve, hash and load it.

    Runs outside any transaction: MLflow writes go first, and a ``PendingArtifact`` row marks them
    until the registering transaction commits.
    """
    uri = spec.mlflow_uri
    try:
        if spec.artifact_uri:
            pending = PendingArtifact.objects.create(mlflow_name=model.name)

            def remember(run_id: str, version: str) -> None:
                pending.run_id, pending.mlflow_version = run_id, version
                pending.save(update_fields=["run_id", "mlflow_version"])

            uri = mlflow_bridge.log_and_register(spec.artifact_uri, model.name, on_logged=remember)
        return mlflow_bridge.resolve(uri)
    except mlflow_bridge.MlflowBridgeError as exc:
        field = "artifact_uri" if spec.artifact_uri else "mlflow_uri"
        raise InvalidInput({field: str(exc)}) from exc
    except ConnectionError as exc:
        raise Unavailable(f"MLflow cannot be reached: {exc}") from exc


def version_create(
    *,
    model: RegisteredModel,
    spec: VersionSpec,
    semver: SemVer,
    engineer,
    resolved: mlflow_bridge.ResolvedModel,
    registered_by=None,
) -> ModelVersion:
    """Insert the version and its card; the caller holds the transaction and the row lock."""
    version = ModelVersion.objects.create(
        model=model,
        version=str(semver),
        major=semver.major,
        minor=semver.minor,
        patch=semver.patch,
        mlflow_name=resolved.name,
        mlflow_version=resolved.version,
        artifact_uri=resolved.source or f"models:/{resolved.name}/{resolved.version}",
        artifact_digest=resolved.digest,
        flavor=resolved.flavor,
        training_data_hash=spec.training_data_hash,
        training_data_start=spec.training_data_start,
        training_data_end=spec.training_data_end,
        hyperparameters=spec.hyperparameters,
        metrics=spec.metrics,
        feature_list=list(spec.feature_list),
        thresholds=dict(spec.thresholds),
        responsible_engineer=engineer,
        ethics_audit_date=spec.ethics_audit_date,
        created_at=spec.created_at or resolved.created_at,
        registered_by=registered_by,
    )
    card = {k: spec.model_card.get(k, [] if k == "owners" else "") for k in CARD_FIELDS}
    ModelCard.objects.create(version=version, **card)
    PendingArtifact.objects.filter(
        mlflow_name=resolved.name, mlflow_version=resolved.version
    ).delete()
    return version


def sweep_orphans(*, older_than: datetime) -> list[str]:
    """Remove MLflow versions whose registration never committed. Returns what was removed."""
    removed = []
    for pending in PendingArtifact.objects.filter(created_at__lt=older_than):
        committed = ModelVersion.objects.filter(
            mlflow_name=pending.mlflow_name, mlflow_version=pending.mlflow_version
        ).exists()
        if pending.mlflow_version and not committed:
            try:
                mlflow_bridge.delete_version(pending.mlflow_name, pending.mlflow_version)
            except Exception:  # already gone is fine; anything else retries next sweep
                if _mlflow_version_exists(pending.mlflow_name, pending.mlflow_version):
                    continue
            removed.append(f"models:/{pending.mlflow_name}/{pending.mlflow_version}")
        with transaction.atomic():
            pending.delete()
    return removed


def _mlflow_version_exists(name: str, version: str) -> bool:
    try:
        mlflow_bridge.client().get_model_version(name, version)
    except Exception:
        return False
    return True
