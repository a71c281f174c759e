"""Read-only governance records in the admin; changes go through audited services."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django_fsm import can_proceed

from platform_core.errors import DomainError
from registry.admin import ReadOnlyAdmin

from . import inbox
from . import lifecycle as lifecycle_rules
from .admin_scoping import PerModelViewMixin
from .api.audit_views import version_events
from .approvals import (
    APPROVAL_STAGE,
    approval_record,
    conflicts_of_interest,
)
from .audit import Actor
from .models import (
    Approval,
    AuditEvent,
    Escalation,
    Evaluation,
    Lifecycle,
    RoleGrant,
    TokenScope,
    ValidationPolicy,
)
from .permissions import can
from .policy_admin import VersionedPolicyAdmin
from .roles import Action
from .wording import describe, details


def safe_next(request, fallback: str) -> str:
    """The form's ``next`` when it points back into this site, else ``fallback``.

    The approval form is posted by a logged-in approver; an absolute or scheme-relative ``next``
    to another host would turn the admin into an open redirect (a phishing aid).
    """
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def allowed_transitions(lifecycle: Lifecycle, user) -> list[dict]:
    """The transitions this user may request now, each with what still blocks it."""
    offered = []
    for name, rule in lifecycle_rules.RULES.items():
        if not rule.actions or not can_proceed(getattr(lifecycle, name)):
            continue
        if not any(can(user, a, model=lifecycle.version.model) for a in rule.actions):
            continue
        with transaction.atomic():  # the rollback check locks the standby row
            unmet = lifecycle_rules.unmet_conditions(lifecycle, name, comment="(from the form)")
        offered.append({"name": name, "needs_comment": rule.needs_comment, "unmet": unmet})
    return offered


class AuditHistoryMixin:
    """The "History" button shows the object's audit events, not Django's LogEntry rows.

    Nothing here is saved through the admin (services write and audit every change), so the
    admin's own history is always empty while the audit log holds every action.
    """

    def audit_events(self, obj):
        return AuditEvent.objects.filter(
            object_type=obj._meta.label, object_id=str(obj.pk)
        ).order_by("seq")

    def history_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is None or not self.has_view_permission(request, obj):
            raise Http404(f"no {self.opts.verbose_name} {object_id}")
        events = list(self.audit_events(obj))
        context = {
            **self.admin_site.each_context(request),
            "title": f"History: {obj}",
            "subtitle": None,
            "opts": self.opts,
            "object": obj,
            "events": [(e, describe(e), details(e)) for e in events],
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/governance/audit_history.html", context)


@admin.register(Lifecycle)
class LifecycleAdmin(AuditHistoryMixin, PerModelViewMixin, ReadOnlyAdmin):
    """The version's stage with buttons for what the logged-in user may do, and its evidence."""

    model_lookup = "version__model"
    list_display = ["version", "stage", "archive", "stage_entered_at", "promoted_at"]
    list_filter = ["stage", "archive", "version__model"]
    search_fields = ["version__model__name", "version__version"]
    list_select_related = ["version__model"]
    change_form_template = "admin/governance/lifecycle/change_form.html"

    def get_urls(self):
        extra = [
            path(
                "<int:pk>/transition/",
                self.admin_site.admin_view(self.transition_view),
                name="governance_lifecycle_transition",
            ),
            path(
                "inbox/",
                self.admin_site.admin_view(self.inbox_view),
                name="governance_lifecycle_inbox",
            ),
            path(
                "<int:pk>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="governance_lifecycle_decide",
            ),
        ]
        return extra + super().get_urls()

    def audit_events(self, obj):
        """The whole version's story: registration, evidence, sign-offs and transitions."""
        return version_events(obj.version)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        lifecycle = get_object_or_404(
            self.get_queryset(request).select_related("version__model"), pk=object_id
        )
        version = lifecycle.version
        context = {
            "transitions": allowed_transitions(lifecycle, request.user),
            "approvals": Approval.objects.filter(version=version).select_related("user"),
            "evaluations": [
                (e, json.dumps(e.report, indent=2))
                for e in Evaluation.objects.filter(version=version)
            ],
            "decisions": _decisions_for(request.user, lifecycle),
            "sign_off_barred": conflicts_of_interest(version, request.user)
            if lifecycle.stage in APPROVAL_STAGE.values()
            else [],
        }
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **context}
        )

    def transition_view(self, request, pk: int):
        lifecycle = get_object_or_404(Lifecycle.objects.select_related("version__model"), pk=pk)
        if request.method == "POST":
            name = request.POST.get("transition", "")
            try:
                lifecycle_rules.transition(
                    version=lifecycle.version,
                    name=name,
                    comment=request.POST.get("comment", ""),
                    actor=Actor.for_user(request.user, request_id="admin"),
                )
                messages.success(request, f"{lifecycle.version}: {name} done.")
            except DomainError as exc:
                reasons = getattr(exc, "reasons", [str(exc)])
                messages.error(request, f"{name} refused: " + "; ".join(reasons))
        return redirect(reverse("admin:governance_lifecycle_change", args=[pk]))

    def decide_view(self, request, pk: int):
        lifecycle = get_object_or_404(Lifecycle.objects.select_related("version__model"), pk=pk)
        if request.method == "POST":
            try:
                approval_record(
                    version=lifecycle.version,
                    transition=request.POST.get("transition", ""),
                    role=request.POST.get("role", ""),
                    decision=request.POST.get("decision", ""),
                    comment=request.POST.get("comment", ""),
                    actor=Actor.for_user(request.user, request_id="admin"),
                )
                messages.success(request, "Decision recorded.")
            except DomainError as exc:
                messages.error(request, str(exc))
        return redirect(safe_next(request, reverse("admin:governance_lifecycle_inbox")))

    def inbox_view(self, request):
        """Versions waiting for a sign-off in one of the user's roles, and the other work the
        higher apps hand them (incident steps, ...) through ``GOVERNANCE_WORK_HOOK``."""
        grants = inbox.Grants.of(request.user)
        waiting = [
            {"lifecycle": p.lifecycle, "transition": p.transition, "role": p.role, "mine": p.mine}
            for p in inbox.approvals_pending(request.user, grants=grants)
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Approvals inbox",
            "waiting": waiting,
            "other_work": inbox.other_work(request.user, grants=grants),
            "roles": _held_roles(request.user),
        }
        return TemplateResponse(request, "admin/governance/lifecycle/inbox.html", context)


def _held_roles(user) -> list[str]:
    """The user's grants as the inbox names them: global roles, then "role for model"."""
    grants = RoleGrant.objects.filter(user=user).select_related("model")
    return sorted(g.role for g in grants if g.model_id is None) + sorted(
        f"{g.role} for {g.model.name}" for g in grants if g.model_id is not None
    )


def _decisions_for(user, lifecycle: Lifecycle) -> list[dict]:
    """(transition, role) pairs the user could sign for this version now (the inbox's rule).

    Nothing for a person with a conflict of interest (separation of duties): no button to press.
    """
    return [
        {"transition": p.transition, "role": p.role, "mine": p.mine}
        for p in inbox.approvals_pending(user, lifecycles=[lifecycle])
    ]


@admin.register(Evaluation)
class EvaluationAdmin(AuditHistoryMixin, PerModelViewMixin, ReadOnlyAdmin):
    """Gate reports as the platform computed them."""

    model_lookup = "version__model"
    list_display = [
        "version",
        "kind",
        "passed",
        "policy",
        "records",
        "created_at",
        "created_by",
        "submitted_by",
    ]
    list_filter = ["kind", "passed", "version__model"]
    search_fields = ["version__model__name", "version__version", "evidence_digest"]
    readonly_fields = ["pretty_report"]

    @admin.display(description="report")
    def pretty_report(self, obj) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.report, indent=2))


@admin.register(Approval)
class ApprovalAdmin(AuditHistoryMixin, PerModelViewMixin, ReadOnlyAdmin):
    model_lookup = "version__model"
    list_display = ["version", "transition", "role", "user", "decision", "created_at", "voided_at"]
    list_filter = ["transition", "role", "decision", "version__model"]
    search_fields = ["version__model__name", "user__username", "comment"]


@admin.register(ValidationPolicy)
class ValidationPolicyAdmin(AuditHistoryMixin, VersionedPolicyAdmin):
    """The gate thresholds; the ML Lead of a model publishes a new version (audited)."""

    edit_action = Action.APPROVE_AS_ML_LEAD


@admin.register(Escalation)
class EscalationAdmin(ReadOnlyAdmin):
    list_display = ["lifecycle", "stage", "deadline", "created_at"]
    list_filter = ["stage"]


@admin.register(RoleGrant)
class RoleGrantAdmin(AuditHistoryMixin, ReadOnlyAdmin):
    list_display = ["user", "role", "model", "granted_at", "granted_by"]
    list_filter = ["role", "model"]
    search_fields = ["user__username"]


@admin.register(TokenScope)
class TokenScopeAdmin(ReadOnlyAdmin):
    list_display = ["name", "user", "roles", "expiry"]
    search_fields = ["name", "token__user__username"]

    @admin.display(description="user")
    def user(self, obj) -> str:
        return obj.token.user.get_username()

    @admin.display(description="expires")
    def expiry(self, obj):
        return obj.token.expiry


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.is_superuser or can(request.user, Action.READ_AUDIT)

    list_display = ["seq", "created_at", "actor", "action", "object_repr", "model_name"]
    list_filter = ["action", "model_name"]
    search_fields = ["actor", "action", "object_repr", "reason", "request_id"]
    date_hierarchy = "created_at"
