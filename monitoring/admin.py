"""Monitoring in the admin: runs with their metrics, alerts, review items, audit tasks, data.

Everything is read-only except monitoring policies, whose add and change forms create a new policy
version through the audited service (``governance.policies.policy_publish``), never by saving the
row (``governance.policy_admin``).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from governance.policy_admin import VersionedPolicyAdmin, pretty
from governance.roles import Action
from registry.admin import ReadOnlyAdmin

from .models import (
    Alert,
    AuditTask,
    DataBatch,
    MetricPoint,
    MonitoringPolicy,
    MonitorRun,
    ReferenceProfile,
    ReviewItem,
)

POLICY_EDIT_ACTION = Action.APPROVE_AS_ML_LEAD  # the ML Lead owns the monitoring thresholds


_pretty = pretty


@admin.register(MonitorRun)
class MonitorRunAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "model",
        "version",
        "kind",
        "status",
        "window_start",
        "window_end",
        "rows",
        "trigger",
        "alert_link",
        "finished_at",
    ]
    list_filter = ["kind", "status", "trigger", "model"]
    search_fields = ["model__name", "version__version", "reason"]
    list_select_related = ["model", "version", "alert"]
    date_hierarchy = "window_end"
    exclude = ["metrics"]
    readonly_fields = ["pretty_metrics"]

    @admin.display(description="alert")
    def alert_link(self, obj) -> str:
        try:
            alert = obj.alert
        except Alert.DoesNotExist:
            return "—"
        url = reverse("admin:monitoring_alert_change", args=[alert.pk])
        return format_html('<a href="{}">{} {}</a>', url, alert.severity, alert.metric)

    @admin.display(description="metrics")
    def pretty_metrics(self, obj) -> str:
        return _pretty(obj.metrics)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "model",
        "version",
        "kind",
        "severity",
        "feature",
        "metric",
        "value",
        "threshold",
        "window_end",
        "status",
        "created_at",
    ]
    list_filter = ["severity", "kind", "status", "model"]
    search_fields = ["model__name", "version__version", "feature", "metric"]
    list_select_related = ["model", "version"]
    date_hierarchy = "created_at"
    exclude = ["details"]
    readonly_fields = ["pretty_details", "run_link"]

    @admin.display(description="details")
    def pretty_details(self, obj) -> str:
        return _pretty(obj.details)

    @admin.display(description="run")
    def run_link(self, obj) -> str:
        url = reverse("admin:monitoring_monitorrun_change", args=[obj.run_id])
        return format_html('<a href="{}">run {}</a>', url, obj.run_id)


@admin.register(ReviewItem)
class ReviewItemAdmin(ReadOnlyAdmin):
    list_display = ["alert", "created_at", "reviewed_at", "reviewed_by"]
    list_filter = ["alert__kind", "alert__model"]
    list_select_related = ["alert__version__model"]


@admin.register(AuditTask)
class AuditTaskAdmin(ReadOnlyAdmin):
    list_display = ["model", "period", "version", "due_at", "completed_at", "completed_by"]
    list_filter = ["period", "model"]
    list_select_related = ["model", "version"]


@admin.register(MetricPoint)
class MetricPointAdmin(ReadOnlyAdmin):
    list_display = ["window_end", "model", "version", "kind", "metric", "feature", "group", "value"]
    list_filter = ["kind", "metric", "model"]
    search_fields = ["model__name", "feature", "group"]
    list_select_related = ["model", "version"]


@admin.register(DataBatch)
class DataBatchAdmin(ReadOnlyAdmin):
    list_display = ["model", "version", "kind", "day", "rows", "source", "created_at", "created_by"]
    list_filter = ["kind", "source", "model"]
    search_fields = ["model__name", "path", "digest"]
    list_select_related = ["model", "version"]
    date_hierarchy = "day"


@admin.register(ReferenceProfile)
class ReferenceProfileAdmin(ReadOnlyAdmin):
    list_display = ["version", "rows", "created_at"]
    list_filter = ["version__model"]
    list_select_related = ["version__model"]
    exclude = ["profile"]
    readonly_fields = ["summary"]

    @admin.display(description="profile (without the score sample)")
    def summary(self, obj) -> str:
        profile = dict(obj.profile or {})
        scores = dict(profile.get("scores") or {})
        if "sample" in scores:
            scores["sample"] = f"{len(scores['sample'])} sorted scores"
        profile["scores"] = scores
        return _pretty(profile)


@admin.register(MonitoringPolicy)
class MonitoringPolicyAdmin(VersionedPolicyAdmin):
    """Each save is a new version made by ``policy_publish`` (audited)."""

    edit_action = POLICY_EDIT_ACTION
