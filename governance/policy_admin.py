"""Versioned policies in the admin: each save publishes a new version through ``policy_publish``.

The row is never saved by the admin itself, so the validation against the kind's schema, the race
guard and the audit event are those of every other caller. Only holders of the kind's
``edit_action`` (for the model, or globally) may add or change; everyone with a role may look.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from platform_core.errors import InvalidInput
from registry.admin import ReadOnlyAdmin

from .admin_scoping import ModelScopedAdminMixin
from .audit import Actor
from .permissions import can, can_on_any_model
from .policies import policy_publish, policy_values


def pretty(data: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2, sort_keys=True))


def field_errors(exc: InvalidInput) -> list[str]:
    """The service's errors as form messages, each naming its field."""
    return [f"{k}: {' '.join(v) if isinstance(v, list) else v}" for k, v in exc.errors.items()]


class PolicyForm(forms.ModelForm):
    """The values as JSON and a reason; the admin sets ``kind``, ``edit_action`` and ``user``."""

    kind = ""
    edit_action = ""

    new_settings = forms.JSONField(
        label="settings",
        widget=forms.Textarea(attrs={"rows": 22, "cols": 60}),
        help_text="Change the values you want; a new policy version is created from the current "
        "one with the values that differ.",
    )
    change_comment = forms.CharField(
        label="why", widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if self.instance.pk:
            self.fields["new_settings"].initial = self.instance.resolved
        else:
            self.fields["new_settings"].initial = self._meta.model.schema.defaults()

    def clean(self):
        data = super().clean()
        model = self.instance.model if self.instance.pk else data.get("model")
        new = data.get("new_settings")
        if model is None or new is None:
            return data
        if not isinstance(new, dict):
            raise forms.ValidationError({"new_settings": "give a JSON object of settings"})
        if self.user is not None and not (
            self.user.is_superuser or can(self.user, self.edit_action, model=model)
        ):
            raise forms.ValidationError(f"you may not change the {self.kind} policy of {model}")
        current = policy_values(self.kind, model)
        changes = {k: v for k, v in new.items() if current.get(k) != v}
        if not changes:
            raise forms.ValidationError(
                {"new_settings": "nothing differs from the current version"}
            )
        try:
            self._meta.model.schema.validate(changes)
        except InvalidInput as exc:
            raise forms.ValidationError({"new_settings": field_errors(exc)}) from None
        data["changes"] = changes
        data["policy_model"] = model
        return data


class VersionedPolicyAdmin(ModelScopedAdminMixin, ReadOnlyAdmin):
    """Each save is a new version made by ``policy_publish`` (audited)."""

    form = PolicyForm
    list_display = ["model", "version", "created_at", "created_by", "reason"]
    list_filter = [("model", admin.RelatedOnlyFieldListFilter)]  # only the user's models
    list_select_related = ["model"]
    shown = ["model", "version", "current", "created_by", "reason"]

    def _may_edit(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if user.is_superuser:
            return True
        if obj is None:
            return can_on_any_model(user, self.edit_action)
        return can(user, self.edit_action, model=obj.model)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._may_edit(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._may_edit(request, obj)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["model", "new_settings", "change_comment"]
        editable = ["new_settings", "change_comment"] if self._may_edit(request, obj) else []
        return self.shown + editable

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.shown

    @admin.display(description="settings of this version")
    def current(self, obj) -> str:
        return pretty(obj.resolved)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        user, kind, edit_action = request.user, self.model.kind, self.edit_action

        class WithUser(form_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, user=user, **kw)
                self.kind, self.edit_action = kind, edit_action

        return WithUser

    def save_model(self, request, obj, form, change) -> None:
        policy = policy_publish(
            self.model.kind,
            form.cleaned_data["policy_model"],
            form.cleaned_data["changes"],
            Actor.for_user(request.user, request_id="admin"),
            reason=form.cleaned_data["change_comment"],
        )
        request._new_policy = policy
        request._changes = form.cleaned_data["changes"]
        # The admin logs and redirects to ``obj``: make it the new version (nothing is saved).
        obj.pk, obj.version, obj.model = policy.pk, policy.version, policy.model

    def save_related(self, request, form, formsets, change) -> None:
        return None

    def _to_new(self, request):
        policy = request._new_policy
        changed = getattr(request, "_changes", None)
        told = f" with {', '.join(sorted(changed))}" if changed else ""
        self.message_user(request, f"{policy}: created{told}.", messages.SUCCESS)
        meta = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[policy.pk])
        )

    def response_add(self, request, obj, post_url_continue=None):
        return self._to_new(request)

    def response_change(self, request, obj):
        return self._to_new(request)

    def construct_change_message(self, request, form, formsets, add=False):
        return [{"changed": {"fields": sorted(form.cleaned_data.get("changes", {}))}}]
