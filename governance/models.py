"""Governance records: role grants, token scopes, the lifecycle record, idempotency and audit."""

from __future__ import annotations

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from registry.models import ModelVersion, RegisteredModel

from .policy_base import VersionedPolicy
from .policy_schema import VALIDATION
from .roles import Role


class Stage(models.TextChoices):
    DEVELOPMENT = "development"
    VALIDATION = "validation"
    STAGING = "staging"
    PRODUCTION = "production"
    MONITORING = "monitoring"
    DEGRADED = "degraded"
    RETRAINING = "retraining"
    ROLLBACK = "rollback"
    RETIRED = "retired"


SERVING_STAGES = frozenset({Stage.PRODUCTION, Stage.MONITORING, Stage.DEGRADED, Stage.RETRAINING})


class RoleGrant(models.Model):
    """A user holds a role globally (model is null) or for one model."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="role_grants"
    )
    role = models.CharField(max_length=32, choices=Role.choices)
    model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    granted_at = models.DateTimeField(default=timezone.now)
    granted_by = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "role", "model"], name="uniq_scoped_grant"),
            models.UniqueConstraint(
                fields=["user", "role"],
                condition=models.Q(model__isnull=True),
                name="uniq_global_grant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role}" + (f" for {self.model}" if self.model_id else "")


class TokenScope(models.Model):
    """What one API token may do: a name for the audit log and the roles it is narrowed to."""

    token = models.OneToOneField(
        settings.KNOX_TOKEN_MODEL, on_delete=models.CASCADE, related_name="scope"
    )
    name = models.CharField(max_length=100)
    roles = models.JSONField(default=list, help_text="Empty: all of the user's roles")

    def __str__(self) -> str:
        return self.name


class Archive(models.TextChoices):
    NONE = "", "not archived"
    WARM = "warm", "warm standby"
    COLD = "cold", "cold archive"


_SERVING = [Stage.PRODUCTION, Stage.MONITORING, Stage.DEGRADED, Stage.RETRAINING]


class Lifecycle(ConcurrentTransitionMixin, models.Model):
    """The decided state of one version. ``stage`` changes only through ``governance.lifecycle``.

    The transition methods only move the stage and stamp times; the conditions (gates, approvals,
    shadow result) and permissions are checked by ``governance.lifecycle`` before calling them,
    so a refusal can list every unmet condition.
    """

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="lifecycle")
    stage = FSMField(default=Stage.DEVELOPMENT, choices=Stage.choices, protected=True)
    stage_entered_at = models.DateTimeField(default=timezone.now)
    promoted_at = models.DateTimeField(null=True, blank=True)
    archive = models.CharField(max_length=8, choices=Archive.choices, blank=True, default="")
    superseded = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The live version this one replaced: the rollback target",
    )
    retired_reason = models.TextField(blank=True)
    shadow_baseline = models.ForeignKey(
        ModelVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The live version when this one entered staging: what its shadow compared with",
    )

    class Meta:
        indexes = [models.Index(fields=["stage"])]

    def __str__(self) -> str:
        return f"{self.version} [{self.stage}]"

    def _entered(self) -> None:
        self.stage_entered_at = timezone.now()

    @transition(field=stage, source=Stage.DEVELOPMENT, target=Stage.VALIDATION)
    def submit_for_validation(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.VALIDATION, target=Stage.DEVELOPMENT)
    def fail_validation(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.VALIDATION, target=Stage.STAGING)
    def approve_for_staging(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.STAGING, target=Stage.VALIDATION)
    def fail_shadow(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.STAGING, target=Stage.PRODUCTION)
    def promote(self) -> None:
        self._entered()
        self.promoted_at = self.stage_entered_at
        self.archive = Archive.NONE

    @transition(field=stage, source=Stage.PRODUCTION, target=Stage.MONITORING)
    def begin_monitoring(self) -> None:
        self._entered()

    @transition(field=stage, source=[Stage.PRODUCTION, Stage.MONITORING], target=Stage.DEGRADED)
    def mark_degraded(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.DEGRADED, target=Stage.MONITORING)
    def resolve(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.DEGRADED, target=Stage.RETRAINING)
    def approve_retraining(self) -> None:
        self._entered()

    @transition(field=stage, source=_SERVING, target=Stage.ROLLBACK)
    def start_rollback(self) -> None:
        self._entered()

    @transition(field=stage, source=Stage.RETIRED, target=Stage.PRODUCTION)
    def restore(self) -> None:
        self._entered()
        self.promoted_at = self.stage_entered_at
        self.archive = Archive.NONE
        self.retired_reason = ""

    @transition(field=stage, source=Stage.ROLLBACK, target=Stage.RETIRED)
    def complete_rollback(self, reason: str = "") -> None:
        self._entered()
        self.archive = Archive.COLD
        self.retired_reason = reason

    @transition(field=stage, source=_SERVING, target=Stage.RETIRED)
    def retire(self, reason: str = "", archive: str = Archive.WARM) -> None:
        self._entered()
        self.archive = archive
        self.retired_reason = reason


class ValidationPolicy(VersionedPolicy):
    """Gate thresholds of one model, versioned: every gate result names the version it used."""

    kind = "validation"
    schema = VALIDATION
    audit_action = "validation_policy.updated"

    class Meta(VersionedPolicy.Meta):
        verbose_name_plural = "validation policies"


class EvidenceKind(models.TextChoices):
    UNIT_TESTS = "unit_tests"
    VALIDATION = "validation"
    SHADOW_REPLAY = "shadow_replay"
    SHADOW = "shadow", "shadow evaluation (gateway)"


class Evaluation(models.Model):
    """One piece of evidence CI submitted and the platform's verdict on it (the gate report)."""

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="evaluations")
    kind = models.CharField(max_length=20, choices=EvidenceKind.choices)
    policy = models.ForeignKey(ValidationPolicy, null=True, blank=True, on_delete=models.PROTECT)
    passed = models.BooleanField()
    report = models.JSONField(help_text="The gate report as the API returned it")
    evidence_digest = models.CharField(max_length=80, help_text="sha256 of the submitted evidence")
    records = models.PositiveIntegerField(default=0)
    data_path = models.CharField(max_length=500, blank=True, help_text="Stored records (Parquet)")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=200)
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Who submitted the evidence (a token's owner); never signs this version off. "
        "Empty for evidence the platform computed itself",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["version", "kind", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} of {self.version}: {'passed' if self.passed else 'failed'}"


class Decision(models.TextChoices):
    APPROVE = "approve"
    REJECT = "reject"


class Approval(models.Model):
    """A person's decision on one transition of one version, in one role.

    Bound to the artifact digest and the evidence it saw: new evidence voids it.
    """

    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="approvals")
    transition = models.CharField(max_length=40)
    role = models.CharField(max_length=32, choices=Role.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    artifact_digest = models.CharField(max_length=80)
    evidence_digest = models.CharField(max_length=64)
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["version", "transition", "voided_at"])]

    def __str__(self) -> str:
        return f"{self.user} {self.decision}s {self.transition} of {self.version} as {self.role}"


class Escalation(models.Model):
    """A stage over its time limit, recorded once per stay in that stage."""

    lifecycle = models.ForeignKey(Lifecycle, on_delete=models.CASCADE, related_name="escalations")
    stage = models.CharField(max_length=20, choices=Stage.choices)
    stage_entered_at = models.DateTimeField()
    deadline = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    notified = models.JSONField(default=list, help_text="Who was told")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["lifecycle", "stage", "stage_entered_at"], name="uniq_escalation"
            )
        ]

    def __str__(self) -> str:
        return f"{self.lifecycle.version} over its {self.stage} limit"


class IdempotencyRecord(models.Model):
    """A claimed ``Idempotency-Key``, then the first response to its POST; retries get it back.

    The row is inserted (``in_progress``, committed on its own) before the view runs, so the
    unique constraint lets exactly one of two concurrent requests with the same key execute.
    """

    IN_PROGRESS = "in_progress"
    DONE = "done"
    STATES = [(IN_PROGRESS, "in progress"), (DONE, "done")]

    key = models.CharField(max_length=200)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_digest = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=STATES, default=DONE)
    claim = models.CharField(
        max_length=32, blank=True, help_text="Which request holds the key while in progress"
    )
    claimed_at = models.DateTimeField(
        default=timezone.now, help_text="An in-progress claim older than the timeout has crashed"
    )
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="uniq_idempotency_key")]


class AuditChainHead(models.Model):
    """The single row locked by every audit write: serialises the chain."""

    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default="0" * 64)


class AuditEvent(models.Model):
    """Append-only, hash-chained record of every state change. See ``governance.audit``."""

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=200, help_text="user, token or system task")
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100)
    object_repr = models.CharField(max_length=300)
    model_name = models.CharField(max_length=100, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    payload_digest = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    redacted = models.BooleanField(default=False)
    # Per-field salts of the redactable fields; a redaction moves a field from here to
    # ``redactions`` (field -> its digest), so the content digest still verifies.
    salts = models.JSONField(default=dict, blank=True)
    redactions = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["action"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_repr} by {self.actor}"


class AuditVerificationState(models.Model):
    """When the audit chain was last verified and how that went (one row; reported, not trusted:
    the proof is the chain and the checkpoints, not this)."""

    ran_at = models.DateTimeField()
    valid = models.BooleanField()
    events = models.BigIntegerField()
    first_bad_seq = models.BigIntegerField(null=True, blank=True)
    problem = models.TextField(blank=True)
