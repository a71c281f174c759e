"""Incidents, their timeline, rollbacks and the notification outbox."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from governance.policy_base import VersionedPolicy
from monitoring.models import Alert
from registry.models import ModelVersion, RegisteredModel

from .ethics_schema import ETHICS


class IncidentKind(models.TextChoices):
    PERFORMANCE = "performance"
    FAIRNESS = "fairness"
    OUTAGE = "outage"
    ETHICS = "ethics"
    MANUAL_ROLLBACK = "manual_rollback"


class IncidentStatus(models.TextChoices):
    OPEN = "open"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    REVIEWED = "reviewed"


ACTIVE_STATUSES = (IncidentStatus.OPEN, IncidentStatus.MITIGATING)


class Incident(models.Model):
    kind = models.CharField(max_length=20, choices=IncidentKind.choices)
    severity = models.CharField(max_length=10, help_text="medium, high or critical")
    playbook = models.CharField(
        max_length=10, blank=True, help_text="1 performance, 2 fairness, 3 outage"
    )
    title = models.CharField(max_length=300)
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="incidents")
    version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="incidents"
    )
    alerts = models.ManyToManyField(Alert, blank=True, related_name="incidents")
    status = models.CharField(
        max_length=12, choices=IncidentStatus.choices, default=IncidentStatus.OPEN
    )
    opened_by = models.CharField(max_length=200)
    review_due_at = models.DateTimeField(null=True, blank=True)
    review_notes = models.TextField(blank=True)
    halt = models.ForeignKey(
        "serving.Halt",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="incidents",
        help_text="The emergency halt this incident engaged",
    )
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["model", "kind", "status"])]

    def __str__(self) -> str:
        return f"incident {self.pk} ({self.kind}, {self.model_id})"


class EventKind(models.TextChoices):
    OPENED = "opened"
    ALERT = "alert", "alert joined"
    STEP = "step"
    DECISION = "decision"
    NOTIFICATION = "notification"
    ROLLBACK = "rollback"
    STATUS = "status"


class IncidentEvent(models.Model):
    """The incident's timeline: every step, decision and notification, with time and actor."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["at", "id"]


class RollbackStatus(models.TextChoices):
    REQUESTED = "requested"
    SWITCHED = "switched"
    VERIFIED = "verified"
    COMPLETED = "completed"
    NO_STANDBY = "no_standby"
    FAILED = "failed"
    SKIPPED = "skipped"  # the failing version no longer served when the task ran (issue 16)


class Rollback(models.Model):
    """One rollback of one failing version; the unique constraint makes it happen at most once."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="rollbacks")
    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    from_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    to_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=12, choices=RollbackStatus.choices, default=RollbackStatus.REQUESTED
    )
    automatic = models.BooleanField(default=True)
    reason = models.TextField()
    requested_by = models.CharField(max_length=200)
    requested_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    switched_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    verification = models.TextField(blank=True, help_text="How v(n-1) was verified serving")
    task_id = models.CharField(max_length=100, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["from_version"], name="uniq_rollback_per_version")
        ]

    def __str__(self) -> str:
        return f"rollback {self.pk} of version {self.from_version_id} ({self.status})"


class Channel(models.TextChoices):
    EMAIL = "email"
    PAGE = "page"
    WEBHOOK = "webhook"


class NotificationStatus(models.TextChoices):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # the event it announced no longer held when it was due (issue 16)


class Notification(models.Model):
    """One outbound message (the outbox); delivered at most once per dedup key."""

    channel = models.CharField(max_length=10, choices=Channel.choices)
    role = models.CharField(max_length=32, blank=True)
    model = models.ForeignKey(
        RegisteredModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    incident = models.ForeignKey(
        Incident, null=True, blank=True, on_delete=models.PROTECT, related_name="notifications"
    )
    recipients = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    event = models.CharField(max_length=10, default="trigger", help_text="trigger or resolve")
    incident_key = models.CharField(
        max_length=200, blank=True, help_text="Paging dedup key shared by trigger and resolve"
    )
    dedup_key = models.CharField(max_length=250, unique=True)
    status = models.CharField(
        max_length=10, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.channel} to {self.role or self.recipients}: {self.subject}"


class DeliveryAttempt(models.Model):
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="delivery_attempts"
    )
    number = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)
    outcome = models.CharField(max_length=10, help_text="sent, retry or failed")
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["notification", "number"]


# --- Playbooks (data) and their runs ----------------------------------------------------------


class Playbook(models.Model):
    """One incident-response playbook of the specification (section 7), editable in the admin."""

    number = models.CharField(max_length=10, unique=True, help_text="1, 2, 3 … as incidents cite")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"playbook {self.number}: {self.name}"


class PlaybookStep(models.Model):
    """An ordered step: automated (``task`` names what performs it) or assigned to roles.

    ``deadline`` is the offset from the incident's opening (the tables' 30 min … 48 h); None means
    the specification gives none. ``decisions`` lists what a person may decide when completing the
    step (e.g. ``rollback`` / ``no_rollback``); a decision not to roll back needs a justification.
    """

    playbook = models.ForeignKey(Playbook, on_delete=models.CASCADE, related_name="steps")
    order = models.PositiveSmallIntegerField()
    action = models.CharField(max_length=300)
    responsible = models.CharField(max_length=200, help_text="As the specification's table says")
    roles = models.JSONField(
        default=list, blank=True, help_text="Role slugs that may complete the step"
    )
    escalate_to = models.CharField(
        max_length=32, default="ml_lead", help_text="Role told when the step is overdue"
    )
    automated = models.BooleanField(default=False)
    task = models.CharField(
        max_length=60, blank=True, help_text="For automated steps: the action that performs it"
    )
    deadline = models.DurationField(null=True, blank=True)
    condition = models.CharField(
        max_length=100, blank=True, help_text="Applies only if … (else completed as not applicable)"
    )
    decisions = models.JSONField(default=list, blank=True)
    is_review = models.BooleanField(default=False, help_text="The post-incident review")

    class Meta:
        ordering = ["playbook", "order"]
        constraints = [
            models.UniqueConstraint(fields=["playbook", "order"], name="uniq_playbook_step_order")
        ]

    def __str__(self) -> str:
        return f"playbook {self.playbook.number} step {self.order}: {self.action}"


class StepStatus(models.TextChoices):
    PENDING = "pending"  # automated, not yet run
    RUNNING = "running"  # automated, claimed by a worker
    WAITING = "waiting"  # assigned to a role, not yet completed
    DONE = "done"
    SKIPPED = "skipped"  # not applicable (condition), or superseded
    FAILED = "failed"  # automated, gave up with last_error


OPEN_STEP_STATUSES = (StepStatus.PENDING, StepStatus.RUNNING, StepStatus.WAITING)


class StepRun(models.Model):
    """One step of one incident's playbook: a snapshot of the step, so later edits of the
    playbook never change an incident already running."""

    incident = models.ForeignKey(Incident, on_delete=models.CASCADE, related_name="steps")
    step = models.ForeignKey(
        PlaybookStep, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    order = models.PositiveSmallIntegerField()
    action = models.CharField(max_length=300)
    responsible = models.CharField(max_length=200)
    roles = models.JSONField(default=list, blank=True)
    escalate_to = models.CharField(max_length=32, default="ml_lead")
    automated = models.BooleanField(default=False)
    task = models.CharField(max_length=60, blank=True)
    condition = models.CharField(max_length=100, blank=True)
    decisions = models.JSONField(default=list, blank=True)
    is_review = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=StepStatus.choices)
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    completed_by = models.CharField(max_length=200, blank=True)
    note = models.TextField(blank=True)
    decision = models.CharField(max_length=40, blank=True)
    justification = models.TextField(blank=True)
    outcome = models.JSONField(default=dict, blank=True, help_text="What an automated step did")
    escalated_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["incident", "order"]
        constraints = [
            models.UniqueConstraint(fields=["incident", "order"], name="uniq_incident_step")
        ]
        indexes = [models.Index(fields=["status", "due_at"])]

    def __str__(self) -> str:
        return f"incident {self.incident_id} step {self.order} ({self.status})"


# --- Ethics hard limits ------------------------------------------------------------------------


class EthicsPolicy(VersionedPolicy):
    """Hard limits per model, versioned like the other policies: a breach halts the model.

    Its values are ``fairness_limits``, ``prohibited_features`` and ``scoped_attributes``
    (``ethics_schema``).
    """

    kind = "ethics"
    schema = ETHICS
    audit_action = "incidents.ethics_policy_updated"

    class Meta(VersionedPolicy.Meta):
        verbose_name_plural = "ethics policies"

    @property
    def fairness_limits(self) -> dict[str, dict[str, float]]:
        return self.resolved["fairness_limits"]

    @property
    def prohibited_features(self) -> list[str]:
        return self.resolved["prohibited_features"]

    @property
    def scoped_attributes(self) -> list[str]:
        return self.resolved["scoped_attributes"]
