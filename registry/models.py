"""Registered models, their versions and model cards.

A version's facts (artifact, digest, data hash and range, hyperparameters, features, thresholds) are
immutable once registered: a changed threshold is a new PATCH version, so a rollback always
restores the
artifact, threshold configuration and feature list that were approved together.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils import timezone

from .semver import SemVer

MODEL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
RESERVED_MODEL_NAMES = frozenset({"global"})


def validate_model_name(value: str) -> None:
    if not MODEL_NAME_RE.match(value or ""):
        raise ValidationError(
            "Model names use lowercase letters, digits, '.', '_' and '-', start with a letter or "
            "digit and are at most 100 characters, e.g. hotspot-classifier.",
            code="invalid",
        )
    if value in RESERVED_MODEL_NAMES:
        raise ValidationError(f"'{value}' is reserved (it names the global halt scope).")


class RegisteredModel(models.Model):
    name = models.CharField(max_length=100, unique=True, validators=[validate_model_name])
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("registry:model-detail", args=[self.name])


class SerializationFormat(models.TextChoices):
    PICKLE = "pickle"
    CLOUDPICKLE = "cloudpickle"
    SKOPS = "skops"
    ONNX = "onnx"
    OTHER = "other"


class ModelVersionQuerySet(models.QuerySet["ModelVersion"]):
    def newest_first(self) -> ModelVersionQuerySet:
        return self.order_by("-major", "-minor", "-patch")


class ModelVersion(models.Model):
    """One trained, registered version; the facts of the specification's registry schema."""

    # The artifact and its training as registration resolved them: immutable (FACT_FIELDS) and
    # shown as stored by the version API (governance.api.serializers.VersionSerializer).
    TRAINING_FACTS = (
        "artifact_uri",
        "artifact_digest",
        "flavor",
        "training_data_hash",
        "training_data_start",
        "training_data_end",
        "hyperparameters",
        "metrics",
        "feature_list",
        "feature_types",
        "thresholds",
    )
    FACT_FIELDS = (
        "model_id",
        "version",
        "major",
        "minor",
        "patch",
        "mlflow_name",
        "mlflow_version",
        *TRAINING_FACTS,
        "responsible_engineer_id",
        "created_at",
        "mlflow_run_id",
        "source_commit",
        "serialization_format",
        "executable",
        "signature",
    )

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="versions")
    version = models.CharField(max_length=32, help_text="Semantic version MAJOR.MINOR.PATCH")
    major = models.PositiveIntegerField(editable=False)
    minor = models.PositiveIntegerField(editable=False)
    patch = models.PositiveIntegerField(editable=False)

    mlflow_name = models.CharField(max_length=256)
    mlflow_version = models.CharField(max_length=32)
    artifact_uri = models.CharField(max_length=1024, help_text="Where MLflow keeps the artifact")
    artifact_digest = models.CharField(
        max_length=80, help_text="sha256 over the artifact's files; approvals and loads bind to it"
    )
    flavor = models.CharField(max_length=64, help_text="MLflow flavour, e.g. sklearn")

    training_data_hash = models.CharField(max_length=200)
    training_data_start = models.DateField()
    training_data_end = models.DateField()
    hyperparameters = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(
        default=dict, blank=True, help_text="As reported by CI; stored for reference, never gating"
    )
    feature_list = models.JSONField(default=list)
    feature_types = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per feature: "number", "integer", "string" or "boolean"; empty for versions '
        "registered before types were declared (registry.feature_types)",
    )
    thresholds = models.JSONField(default=dict)
    responsible_engineer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_versions"
    )
    ethics_audit_date = models.DateField(null=True, blank=True, help_text="Last ethics review")
    created_at = models.DateTimeField(help_text="Training timestamp (the MLflow run's start)")
    registered_at = models.DateTimeField(default=timezone.now, editable=False)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Provenance, as the isolated artifact probe found it at registration (immutable facts).
    mlflow_run_id = models.CharField(
        max_length=64, blank=True, help_text="The MLflow run that logged the artifact"
    )
    source_commit = models.CharField(
        max_length=64, blank=True, help_text="The run's mlflow.source.git.commit tag, if logged"
    )
    serialization_format = models.CharField(
        max_length=16,
        choices=SerializationFormat.choices,
        blank=True,
        help_text="How the model is serialized; blank: registered before this was recorded",
    )
    executable = models.BooleanField(
        default=True, help_text="Loading the artifact runs code from it (pickle, custom loader)"
    )
    signature = models.JSONField(
        null=True,
        blank=True,
        help_text='The MLflow signature {"inputs": [{"name", "type"}], "outputs": [...]}; '
        "null: the artifact has no signature",
    )

    objects = ModelVersionQuerySet.as_manager()

    class Meta:
        ordering = ["model__name", "major", "minor", "patch"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="uniq_model_version"),
            models.UniqueConstraint(
                fields=["model", "major", "minor", "patch"], name="uniq_model_semver"
            ),
            models.CheckConstraint(
                condition=models.Q(training_data_start__lte=models.F("training_data_end")),
                name="training_range_ordered",
            ),
        ]
        indexes = [models.Index(fields=["model", "major", "minor", "patch"])]

    def __str__(self) -> str:
        return f"{self.model.name} {self.version}"

    def save(self, *args, **kwargs) -> None:
        # Facts are immutable: an update may only touch fields outside FACT_FIELDS.
        if self.pk is not None:
            stored = type(self).objects.filter(pk=self.pk).values(*self.FACT_FIELDS).first()
            if stored is not None:
                changed = [f for f in self.FACT_FIELDS if stored[f] != getattr(self, f)]
                if changed:
                    raise ValidationError(
                        f"The facts of a registered version are immutable (tried to change "
                        f"{', '.join(changed)}); register a new version instead."
                    )
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("registry:version-detail", args=[self.model.name, self.version])

    @property
    def semver(self) -> SemVer:
        return SemVer(self.major, self.minor, self.patch)

    @property
    def mlflow_uri(self) -> str:
        return f"models:/{self.mlflow_name}/{self.mlflow_version}"


class ModelCard(models.Model):
    """The completed model card (Phase 5 template) of one version."""

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="card")
    intended_use = models.TextField()
    out_of_scope_uses = models.TextField(blank=True)
    training_data = models.TextField(blank=True)
    evaluation_data = models.TextField(blank=True)
    metrics = models.TextField(blank=True, help_text="Narrative of the evaluation metrics")
    fairness_analysis = models.TextField(blank=True)
    ethical_considerations = models.TextField(blank=True)
    caveats_and_limitations = models.TextField(blank=True)
    owners = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    SECTIONS = (
        ("intended_use", "Intended use"),
        ("out_of_scope_uses", "Out-of-scope uses"),
        ("training_data", "Training data"),
        ("evaluation_data", "Evaluation data"),
        ("metrics", "Metrics"),
        ("fairness_analysis", "Fairness analysis"),
        ("ethical_considerations", "Ethical considerations"),
        ("caveats_and_limitations", "Caveats and limitations"),
    )

    def __str__(self) -> str:
        return f"Model card of {self.version}"

    def get_absolute_url(self) -> str:
        return reverse("registry:model-card", args=[self.version.model.name, self.version.version])


class PendingArtifact(models.Model):
    """An MLflow write made before its database row commits; the sweeper removes orphans.

    Written in its own transaction before the MLflow call, deleted in the registering transaction:
    if the registration fails, the row survives and points at what to clean up.
    """

    mlflow_name = models.CharField(max_length=256)
    mlflow_version = models.CharField(max_length=32, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"pending {self.mlflow_name} {self.mlflow_version or '?'}"


class ArtifactPolicy(models.Model):
    """What artifacts may back a model; set by an ML lead of the model (audited).

    Without a row the defaults apply: any flavour, executable formats allowed (the demo's pickled
    scikit-learn models), backed by the MLflow registered model of the same name.
    """

    model = models.OneToOneField(
        RegisteredModel, on_delete=models.PROTECT, related_name="artifact_policy"
    )
    allowed_flavors = models.JSONField(
        default=list, blank=True, help_text="MLflow flavours allowed; empty: any"
    )
    allow_executable = models.BooleanField(
        default=True, help_text="False: only onnx and skops artifacts (loading runs no code)"
    )
    mlflow_name = models.CharField(
        max_length=256,
        blank=True,
        help_text="The MLflow registered model that backs this model; blank: the same name",
    )
    reason = models.TextField(blank=True)
    updated_by = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "artifact policies"

    def __str__(self) -> str:
        return f"artifact policy of {self.model.name}"

    @property
    def effective_mlflow_name(self) -> str:
        return self.mlflow_name or self.model.name
