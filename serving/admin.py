"""Halts in the admin: engage one (the add form) and approve a release (an action).

Both go through the audited services with the logged-in user's roles; nothing is edited directly.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from governance.audit import Actor
from governance.permissions import can_on_any_model
from governance.roles import Action
from platform_core.errors import DomainError
from registry.admin import ReadOnlyAdmin, ReadOnlyInline

from .halt import halt_engage, halt_release_approve, waiting_for
from .models import Halt, HaltReleaseApproval, RoutingGeneration, StalePrediction


class HaltEngageForm(forms.ModelForm):
    class Meta:
        model = Halt
        fields = ["scope", "reason"]
        help_texts = {"scope": "A model name, or 'global' to stop every model."}


class HaltReleaseApprovalInline(ReadOnlyInline, admin.TabularInline):
    model = HaltReleaseApproval
    fields = ["user", "role", "comment", "created_at"]
    readonly_fields = fields


@admin.register(Halt)
class HaltAdmin(ReadOnlyAdmin):
    list_display = [
        "scope",
        "where_text",
        "active",
        "reason",
        "engaged_by_label",
        "engaged_at",
        "released_at",
    ]
    list_filter = ["scope", ("released_at", admin.EmptyFieldListFilter)]
    search_fields = ["scope", "reason", "engaged_by_label"]
    inlines = [HaltReleaseApprovalInline]
    actions = ["approve_release"]
    readonly_fields = [
        "scope",
        "where_text",
        "reason",
        "engaged_by_label",
        "engaged_at",
        "released_at",
        "waits",
    ]

    @admin.display(boolean=True)
    def active(self, obj) -> bool:
        return obj.released_at is None

    @admin.display(description="waiting for approval of")
    def waits(self, obj) -> str:
        return ", ".join(waiting_for(obj)) or "-"

    def has_add_permission(self, request, obj=None) -> bool:
        return can_on_any_model(request.user, Action.HALT)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = HaltEngageForm
            kwargs["fields"] = ["scope", "reason"]
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        try:
            halt, created = halt_engage(
                scope=obj.scope,
                reason=obj.reason,
                actor=Actor.for_user(request.user, request_id="admin"),
            )
        except DomainError as exc:
            messages.error(request, f"Halt not engaged: {exc}")
            obj.pk = None
            return
        obj.pk = halt.pk
        if not created:
            messages.warning(request, f"A halt of {halt.scope} was already in force.")

    def response_add(self, request, obj, post_url_continue=None):
        if obj.pk is None:
            from django.shortcuts import redirect

            return redirect(request.path)
        return super().response_add(request, obj, post_url_continue)

    def log_addition(self, request, obj, message):
        if obj.pk is not None:  # the audit log has the real record; keep the admin log too
            return super().log_addition(request, obj, message)
        return None

    @admin.action(description="Approve the release of the selected halts")
    def approve_release(self, request, queryset) -> None:
        actor = Actor.for_user(request.user, request_id="admin")
        for halt in queryset.filter(released_at__isnull=True):
            name = f"{halt.scope} where {halt.where_text}" if halt.where else halt.scope
            try:  # a scoped halt is named by its predicate, as engaged
                outcome = halt_release_approve(scope=halt.scope, actor=actor, where=halt.where)
            except DomainError as exc:
                messages.error(request, f"{name}: {exc}")
                continue
            if outcome.released:
                messages.success(request, f"{name}: released.")
            else:
                messages.success(
                    request,
                    f"{name}: approved as {outcome.approval.role}; waiting for "
                    f"{', '.join(waiting_for(outcome.halt))}.",
                )


@admin.register(StalePrediction)
class StalePredictionAdmin(ReadOnlyAdmin):
    list_display = ["model_name", "instance_key", "version", "score", "prediction", "updated_at"]
    list_filter = ["model_name"]


@admin.register(RoutingGeneration)
class RoutingGenerationAdmin(ReadOnlyAdmin):
    list_display = ["model_name", "generation"]
