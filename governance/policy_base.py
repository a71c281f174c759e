"""The versioned policy every kind (validation, monitoring, ethics) is made of.

A policy row is never edited: ``governance.policies.policy_publish`` writes the next version, so
every gate result, monitor run and ethics breach names the version it used.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.db import models
from django.utils import timezone

from registry.models import RegisteredModel

from .policy_schema import Schema


class VersionedPolicy(models.Model):
    """One version of one kind of policy of one model; ``values`` are checked by ``schema``."""

    kind: ClassVar[str]  # "validation", "monitoring", "ethics": the key policy_publish takes
    schema: ClassVar[Schema]
    audit_action: ClassVar[str]  # the audit action of a new version (kept from before #11)

    model = models.ForeignKey(RegisteredModel, on_delete=models.PROTECT, related_name="+")
    version = models.PositiveIntegerField(help_text="0: no version yet, the schema's defaults")
    values = models.JSONField(default=dict, blank=True)
    reason = models.TextField(blank=True, help_text="Why this version")
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True
        ordering = ["model__name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["model", "version"], name="uniq_%(app_label)s_%(class)s_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.kind} policy v{self.version}"

    @property
    def resolved(self) -> dict[str, Any]:
        """The values in force: the schema's defaults under the stored values."""
        return self.schema.resolve(self.values)
