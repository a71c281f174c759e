"""Ethics policies in the admin: each save is a new version made by ``ethics_policy_update``.

Only an Ethics Officer (for the model, or globally) may add or change one; everyone with a role
may look. The row is never saved by the admin itself, so the audit trail and the check that
follows a change (a breach halts the model) are the same as over the API.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin

from governance.audit import Actor
from governance.permissions import can, can_on_any_model
from governance.policy_admin import VersionedPolicyAdmin, field_errors, pretty
from governance.roles import Action
from platform_core.errors import InvalidInput

from .ethics import ethics_policy_update
from .ethics_schema import validate_limits, validate_prohibited
from .models import EthicsPolicy

EDIT_ACTION = Action.APPROVE_AS_ETHICS_OFFICER


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
        values = self.instance.resolved if self.instance.pk else EthicsPolicy.schema.defaults()
        self.fields["new_fairness_limits"].initial = values["fairness_limits"]
        self.fields["new_prohibited_features"].initial = values["prohibited_features"]

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
                errors[field] = field_errors(exc)
        if errors:
            raise forms.ValidationError(errors)
        data["policy_model"] = model
        return data


@admin.register(EthicsPolicy)
class EthicsPolicyAdmin(VersionedPolicyAdmin):
    """Each save is a new version made by ``ethics_policy_update`` (audited, then checked)."""

    edit_action = EDIT_ACTION
    form = EthicsPolicyForm
    shown = ["model", "version", "limits", "prohibited", "created_by", "reason"]

    def _may_edit(self, request, obj=None) -> bool:
        user = request.user  # no superuser shortcut: only an Ethics Officer sets hard limits
        if not (user.is_active and user.is_staff):
            return False
        if obj is None:
            return can_on_any_model(user, EDIT_ACTION)
        return can(user, EDIT_ACTION, model=obj.model)

    def get_fields(self, request, obj=None):
        new = ["new_fairness_limits", "new_prohibited_features", "change_reason"]
        if obj is None:
            return ["model", *new]
        return self.shown + (new if self._may_edit(request, obj) else [])

    @admin.display(description="fairness limits of this version")
    def limits(self, obj) -> str:
        return pretty(obj.fairness_limits)

    @admin.display(description="prohibited features of this version")
    def prohibited(self, obj) -> str:
        return pretty(obj.prohibited_features)

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

    def construct_change_message(self, request, form, formsets, add=False):
        return [{"changed": {"fields": ["fairness_limits", "prohibited_features"]}}]
