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

from platform_core.errors import Conflict, InvalidInput, NotFound, Unavailable

from . import artifact_sources, mlflow_bridge
from .artifact_policy import policy_for
from .feature_types import declared_errors
from .feature_types import resolve as resolve_feature_types
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
    feature_types: dict[str, str] | None = None


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
    elif spec.feature_types is not None and (
        problems := declared_errors(spec.feature_types, spec.feature_list)
    ):
        errors["feature_types"] = "; ".join(problems)
    decision = spec.thresholds.get("decision")
    if (
        not isinstance(decision, int | float)
        or isinstance(decision, bool)
        or not 0 <= decision <= 1
    ):
        errors["thresholds"] = "must contain 'decision', a number between 0 and 1"
    if bool(spec.mlflow_uri) == bool(spec.artifact_uri):
        errors["mlflow_uri"] = "give exactly one of mlflow_uri (models:/NAME/N) and artifact_uri"
    else:
        try:
            artifact_source(model, spec)
        except artifact_sources.SourceRefused as exc:
            errors[exc.field] = str(exc)
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


def artifact_source(model: RegisteredModel, spec: VersionSpec) -> artifact_sources.Source:
    """The allowed source of the registration, or SourceRefused naming the field.

    ``mlflow_uri`` must name the MLflow registered model that backs this model (its own name,
    or the one its artifact policy maps): registering it mirrors stage tags and aliases onto it.
    """
    mlflow_name = policy_for(model).mlflow_name
    if spec.mlflow_uri:
        name, version = artifact_sources.parse_models_uri(spec.mlflow_uri, field="mlflow_uri")
        if name != mlflow_name:
            raise artifact_sources.cross_model("mlflow_uri", name, model.name, mlflow_name)
        return artifact_sources.Source(
            "models", f"models:/{name}/{version}", name=name, version=version
        )
    return artifact_sources.check_artifact_uri(
        spec.artifact_uri, model_name=model.name, mlflow_name=mlflow_name
    )


def ensure_unclaimed(mlflow_name: str, mlflow_version: str) -> None:
    """One MLflow model version backs at most one platform version: its tags mirror one stage.

    Compared in canonical form (``01`` is ``1``), so a spelling cannot claim a version twice.
    """
    if mlflow_version.isdigit():
        mlflow_version = str(int(mlflow_version))
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
    """Make sure MLflow holds the artifact; it is downloaded, hashed and loaded in the probe child.

    Runs outside any transaction: MLflow writes go first, and a ``PendingArtifact`` row marks them
    until the registering transaction commits. The model's artifact policy is applied in the
    child before anything of the artifact is loaded.
    """
    policy = policy_for(model)
    field = "artifact_uri" if spec.artifact_uri else "mlflow_uri"
    try:
        source = artifact_source(model, spec)
    except artifact_sources.SourceRefused as exc:
        raise InvalidInput({exc.field: str(exc)}) from exc
    try:
        if spec.artifact_uri:
            pending: list[PendingArtifact] = []

            def remember(run_id: str, version: str) -> None:
                if not pending:
                    pending.append(PendingArtifact.objects.create(mlflow_name=policy.mlflow_name))
                pending[0].run_id, pending[0].mlflow_version = run_id, version
                pending[0].save(update_fields=["run_id", "mlflow_version"])

            return mlflow_bridge.log_and_register(
                source,
                policy.mlflow_name,
                policy=policy,
                on_logged=remember,
                check=lambda resolved: check_signature(spec, resolved),
            )
        return mlflow_bridge.resolve(source.uri, policy=policy)
    except mlflow_bridge.MlflowBridgeError as exc:
        raise InvalidInput({field: str(exc)}) from exc
    except ConnectionError as exc:
        raise Unavailable("MLflow cannot be reached; retry later") from exc


def check_signature(spec: VersionSpec, resolved: mlflow_bridge.ResolvedModel) -> None:
    """The feature list must be the signature's named inputs, when the artifact has a signature.

    Tensor signatures (no column names, e.g. ONNX) and artifacts without a signature are not
    compared; the version records ``signature: null`` for the latter.
    """
    inputs = (resolved.signature or {}).get("inputs") or []
    names = [spec_input.get("name") for spec_input in inputs]
    if not names or not all(isinstance(name, str) and name for name in names):
        return
    missing = [name for name in names if name not in spec.feature_list]
    extra = [name for name in spec.feature_list if name not in names]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        if extra:
            parts.append(f"not in the signature: {', '.join(extra)}")
        raise InvalidInput(
            {
                "feature_list": "disagrees with the artifact's MLflow signature ("
                + "; ".join(parts)
                + ")"
            }
        )


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
    check_signature(spec, resolved)  # after the bump rules, so their finding comes first
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
        feature_types=resolve_feature_types(
            spec.feature_types, spec.feature_list, getattr(resolved, "local_path", None)
        ),
        thresholds=dict(spec.thresholds),
        responsible_engineer=engineer,
        ethics_audit_date=spec.ethics_audit_date,
        created_at=spec.created_at or resolved.created_at,
        registered_by=registered_by,
        mlflow_run_id=resolved.run_id or "",
        source_commit=resolved.source_commit,
        serialization_format=resolved.serialization_format,
        executable=resolved.executable,
        signature=resolved.signature,
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


def sweep_temp_dirs() -> list[str]:
    """Remove fetch-/log-/probe- directories that killed workers left in the artifact cache."""
    from django.conf import settings

    from .sandbox import sweep_temp_dirs as sweep

    return sweep(older_than_seconds=settings.ARTIFACT_TEMP_MAX_AGE.total_seconds())


def _mlflow_version_exists(name: str, version: str) -> bool:
    try:
        mlflow_bridge.client().get_model_version(name, version)
    except Exception:
        return False
    return True
