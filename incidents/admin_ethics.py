"""Ethics policies in the admin: each save is a new version made by ``ethics_policy_update``.

Only an Ethics Officer (for the model, or globally) may add or change one; everyone with a role
may look. The row is never saved by the admin itself, so the audit trail and the check that
follows a change (a breach halts the model) are the same as over the API.
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

from .ethics import ethics_policy_update, validate_limits, validate_prohibited
from .models import EthicsPolicy

EDIT_ACTION = Action.APPROVE_AS_ETHICS_OFFICER


def _pretty(data: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(data, indent=2, sort_keys=True))


class EthicsPolicyForm(forms.ModelForm):
    new_fairness_limits = forms.JSONField(
        label="fairness limits",
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "cols": 60}),
        help_text='Hard bounds per fairness aggregate, e.g. {"fpr_ratio": {"min": 0.5}, '
        '"equalized_odds_difference": {"max": 0.25}}.',
    )
    new_prohibited_features = forms.JSONField(
        label="prohibited features",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text='Features no serving version may use, e.g. ["ethnicity"].',
    )
    change_reason = forms.CharField(
        label="why", widget=forms.Textarea(attrs={"rows": 3, "cols": 60})
    )

    class Meta:
        model = EthicsPolicy
        fields = ["model"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        if self.instance.pk:
            self.fields["new_fairness_limits"].initial = self.instance.fairness_limits
            self.fields["new_prohibited_features"].initial = self.instance.prohibited_features
        else:
            self.fields["new_fairness_limits"].initial = {}
            self.fields["new_prohibited_features"].initial = []

    def clean(self):
        data = super().clean()
        model = self.instance.model if self.instance.pk else data.get("model")
        if model is None:
            return data
        if self.user is not None and not can(self.user, EDIT_ACTION, model=model):
            raise forms.ValidationError(f"only an Ethics Officer of {model} may change its policy")
        errors: dict[str, list[str]] = {}
        for field, validate, empty in (
            ("new_fairness_limits", validate_limits, {}),
            ("new_prohibited_features", validate_prohibited, []),
        ):
            value = data.get(field)
            try:
                data[field] = validate(empty if value is None else value)
            except InvalidInput as exc:
                errors[field] = [f"{k}: {' '.join(v)}" for k, v in exc.errors.items()]
        if errors:
            raise forms.ValidationError(errors)
        data["policy_model"] = model
        return data


@admin.register(EthicsPolicy)
class EthicsPolicyAdmin(ModelScopedAdminMixin, ReadOnlyAdmin):
    """Each save is a new version made by ``ethics_policy_update`` (audited, then checked)."""

    edit_action = EDIT_ACTION

    form = EthicsPolicyForm
    list_display = ["model", "version", "created_at", "created_by", "reason"]
    list_filter = [("model", admin.RelatedOnlyFieldListFilter)]  # only the user's models
    list_select_related = ["model"]

    def _may_edit(self, request, obj=None) -> bool:
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        if obj is None:
            return can_on_any_model(user, EDIT_ACTION)
        return can(user, EDIT_ACTION, model=obj.model)

    def has_add_permission(self, request, obj=None) -> bool:
        return self._may_edit(request)

    def has_change_permission(self, request, obj=None) -> bool:
        return self._may_edit(request, obj)

    def get_fields(self, request, obj=None):
        new = ["new_fairness_limits", "new_prohibited_features", "change_reason"]
        if obj is None:
            return ["model", *new]
        shown = ["model", "version", "limits", "prohibited", "created_by", "reason"]
        return shown + (new if self._may_edit(request, obj) else [])

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["model", "version", "limits", "prohibited", "created_by", "reason"]

    @admin.display(description="fairness limits of this version")
    def limits(self, obj) -> str:
        return _pretty(obj.fairness_limits)

    @admin.display(description="prohibited features of this version")
    def prohibited(self, obj) -> str:
        return _pretty(obj.prohibited_features)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form_class = super().get_form(request, obj, change=change, **kwargs)
        user = request.user

        class WithUser(form_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, user=user, **kw)

        return WithUser

    def save_model(self, request, obj, form, change) -> None:
        policy = ethics_policy_update(
            model_name=form.cleaned_data["policy_model"].name,
            fairness_limits=form.cleaned_data["new_fairness_limits"],
            prohibited_features=form.cleaned_data["new_prohibited_features"],
            reason=form.cleaned_data["change_reason"],
            actor=Actor.for_user(request.user, request_id="admin"),
        )
        request._new_policy = policy
        # The admin logs and redirects to ``obj``: make it the new version (nothing is saved).
        obj.pk, obj.version, obj.model = policy.pk, policy.version, policy.model

    def save_related(self, request, form, formsets, change) -> None:
        return None

    def _to_new(self, request):
        policy = request._new_policy
        self.message_user(request, f"{policy}: created.", messages.SUCCESS)
        return HttpResponseRedirect(
            reverse("admin:incidents_ethicspolicy_change", args=[policy.pk])
        )

    def response_add(self, request, obj, post_url_continue=None):
        return self._to_new(request)

    def response_change(self, request, obj):
        return self._to_new(request)

    def construct_change_message(self, request, form, formsets, add=False):
        return [{"changed": {"fields": ["fairness_limits", "prohibited_features"]}}]
