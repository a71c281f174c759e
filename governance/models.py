"""Governance records: role grants, token scopes, the lifecycle record, idempotency and audit."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django_fsm import FSMField

from registry.models import ModelVersion, RegisteredModel

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


class Lifecycle(models.Model):
    """The decided state of one version. ``stage`` changes only through transitions in services."""

    version = models.OneToOneField(ModelVersion, on_delete=models.PROTECT, related_name="lifecycle")
    stage = FSMField(default=Stage.DEVELOPMENT, choices=Stage.choices, protected=True)
    stage_entered_at = models.DateTimeField(default=timezone.now)
    promoted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["stage"])]

    def __str__(self) -> str:
        return f"{self.version} [{self.stage}]"


class IdempotencyRecord(models.Model):
    """The first response to a POST carrying an ``Idempotency-Key``; retries get it back."""

    key = models.CharField(max_length=200)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    request_digest = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
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

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["action"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.object_repr} by {self.actor}"
