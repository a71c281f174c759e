"""Monitoring in the admin: runs with their metrics, alerts, review items, audit tasks, data.

Everything is read-only except monitoring policies, whose add and change forms create a new policy
version through the audited service (``monitoring_policy_update``), never by saving the row.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from governance.admin_scoping import ModelScopedAdminMixin
from governance.audit import Actor
from governance.permissions import can, can_on_any_model
from governance.roles import Action
from registry.admin import ReadOnlyAdmin
from registry.errors import InvalidInput

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
from .policies import (
    DEFAULTS,
    monitoring_policy_current,
    monitoring_policy_update,
    policy_settings,
    validate_changes,
)

POLICY_EDIT_ACTION = Action.APPROVE_AS_ML_LEAD  # the ML Lead owns the monitoring thresholds


def _pretty(data: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2, sort_keys=True))


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


class PolicyForm(forms.ModelForm):
    """The settings as JSON and a comment; saving creates a new version through the service."""

    new_settings = forms.JSONField(
        label="settings",
        widget=forms.Textarea(attrs={"rows": 22, "cols": 60}),
        help_text="Change the values you want; a new policy version is created from the current "
        "one with the values that differ.",
    )
    change_comment = forms.CharField(
        label="why", widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )

    class Meta:
        model = MonitoringPolicy
        fields = ["model"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if self.instance.pk:
            self.fields["new_settings"].initial = policy_settings(self.instance)
        else:
            self.fields["new_settings"].initial = dict(DEFAULTS)

    def clean(self):
        data = super().clean()
        model = self.instance.model if self.instance.pk else data.get("model")
        new = data.get("new_settings")
        if model is None or new is None:
            return data
        if not isinstance(new, dict):
            raise forms.ValidationError({"new_settings": "give a JSON object of settings"})
        if self.user is not None and not (
            self.user.is_superuser or can(self.user, POLICY_EDIT_ACTION, model=model)
        ):
            raise forms.ValidationError(f"only the ML Lead of {model} may change its policy")
        current = policy_settings(monitoring_policy_current(model))
        changes = {k: v for k, v in new.items() if current.get(k) != v}
        try:
            validate_changes(changes)
        except InvalidInput as exc:
            errors = exc.errors
            if "changes" in errors:
                raise forms.ValidationError(
                    {"new_settings": "nothing differs from the current version"}
                ) from None
            raise forms.ValidationError(
                {"new_settings": [f"{k}: {' '.join(v)}" for k, v in errors.items()]}
            ) from None
        data["changes"] = changes
        data["policy_model"] = model
        return data


@admin.register(MonitoringPolicy)
class MonitoringPolicyAdmin(ModelScopedAdminMixin, ReadOnlyAdmin):
    """Each save is a new version made by ``monitoring_policy_update`` (audited)."""

    edit_action = POLICY_EDIT_ACTION

    form = PolicyForm
    list_display = ["model", "version", "created_at", "created_by", "comment"]
    list_filter = [("model", admin.RelatedOnlyFieldListFilter)]  # only the user's models
    list_select_related = ["model"]

    def _may_edit(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        if obj is None:
            return can_on_any_model(user, POLICY_EDIT_ACTION)
        return can(user, POLICY_EDIT_ACTION, model=obj.model)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._may_edit(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._may_edit(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["model", "new_settings", "change_comment"]
        return ["model", "version", "current", "created_by", "comment"] + (
            ["new_settings", "change_comment"] if self._may_edit(request, obj) else []
        )

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["model", "version", "current", "created_by", "comment"]

    @admin.display(description="settings of this version")
    def current(self, obj) -> str:
        return _pretty(policy_settings(obj))

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        user = request.user

        class WithUser(form_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, user=user, **kw)

        return WithUser

    def save_model(self, request, obj, form, change) -> None:
        policy = monitoring_policy_update(
            model=form.cleaned_data["policy_model"],
            changes=form.cleaned_data["changes"],
            comment=form.cleaned_data["change_comment"],
            actor=Actor.for_user(request.user, request_id="admin"),
        )
        request._new_policy = policy
        request._changes = form.cleaned_data["changes"]
        # The admin logs and redirects to ``obj``: make it the new version (nothing is saved).
        obj.pk, obj.version, obj.model = policy.pk, policy.version, policy.model

    def save_related(self, request, form, formsets, change) -> None:
        return None

    def _to_new(self, request):
        policy = request._new_policy
        self.message_user(
            request,
            f"{policy}: created with {', '.join(sorted(request._changes))}.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(
            reverse("admin:monitoring_monitoringpolicy_change", args=[policy.pk])
        )

    def response_add(self, request, obj, post_url_continue=None):
        return self._to_new(request)

    def response_change(self, request, obj):
        return self._to_new(request)

    def construct_change_message(self, request, form, formsets, add=False):
        return [{"changed": {"fields": sorted(form.cleaned_data.get("changes", {}))}}]
