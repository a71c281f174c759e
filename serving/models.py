"""Routing generations, the emergency halt switch and the shared stale-prediction cache."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class RoutingGeneration(models.Model):
    """A counter per model name (and ``global``): bumped whenever what serves may have changed.

    Gateways compare it on every request with the generation their cached route was built at;
    when it moved they reload the route. With Redis configured, the counter lives in Redis instead.
    """

    model_name = models.CharField(max_length=100, unique=True)
    generation = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.model_name} @ {self.generation}"


class Halt(models.Model):
    """The kill switch for one model or for all (scope ``global``); active while not released.

    A *scoped* halt (``where`` set, one model only) refuses the requests its predicate matches
    (``serving/predicate.py``) and serves the others. At most one active halt per scope and
    predicate: the model's whole halt has the empty ``where_key``.
    """

    scope = models.CharField(max_length=100, help_text="A model name, or 'global' for every model")
    where = models.JSONField(
        null=True,
        blank=True,
        help_text='Scoped halt: {"field", "op", "value"}; empty: every request of the scope',
    )
    where_key = models.CharField(
        max_length=64, blank=True, default="", help_text="sha256 of the normalised predicate"
    )
    reason = models.TextField()
    engaged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    engaged_by_label = models.CharField(max_length=200, help_text="The actor as audited")
    engaged_at = models.DateTimeField(default=timezone.now)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-engaged_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope", "where_key"],
                condition=models.Q(released_at__isnull=True),
                name="one_active_halt_per_scope_and_where",
            )
        ]
        indexes = [models.Index(fields=["scope", "released_at"])]

    def __str__(self) -> str:
        state = "released" if self.released_at else "engaged"
        where = f" where {self.where_text}" if self.where else ""
        return f"halt of {self.scope}{where} ({state})"

    @property
    def active(self) -> bool:
        return self.released_at is None

    @property
    def where_text(self) -> str:
        """The predicate as people read it ('' for a whole halt)."""
        from .predicate import render

        return render(self.where)


class HaltReleaseApproval(models.Model):
    """One approval to release a halt; an ML Lead's and an Ethics Officer's release it."""

    halt = models.ForeignKey(Halt, on_delete=models.PROTECT, related_name="release_approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    role = models.CharField(max_length=32)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["halt", "role"], name="one_release_approval_per_role"),
            models.UniqueConstraint(fields=["halt", "user"], name="one_release_approval_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} approves release of {self.halt.scope} as {self.role}"


class StalePrediction(models.Model):
    """The last prediction served per (model, instance key), shared by every gateway process."""

    model_name = models.CharField(max_length=100)
    instance_key = models.CharField(max_length=64, help_text="sha256 of the canonical instance")
    version = models.CharField(max_length=32)
    prediction_id = models.CharField(max_length=64)
    score = models.FloatField()
    prediction = models.SmallIntegerField()
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_name", "instance_key"], name="uniq_stale_instance"
            )
        ]
        indexes = [models.Index(fields=["updated_at"])]

    def __str__(self) -> str:
        return f"{self.model_name} {self.instance_key[:12]}… = {self.score:.3f}"
