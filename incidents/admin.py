"""Admin views of incidents, rollbacks and the outbox, and of the playbooks, whose edits go
through the audited services of ``incidents.playbook_editing``.

Governance staff act here as over the API, through the same services: an ML Lead requests a
manual rollback (the Rollback "add" page is that request), and a person holding one of a waiting
step's roles completes it from the incident page. Nothing is saved by the admin itself.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from governance.audit import Actor
from governance.models import SERVING_STAGES, Lifecycle
from governance.permissions import can, can_on_any_model, roles_of
from governance.roles import Action
from platform_core.errors import Conflict, DomainError, Forbidden, InvalidInput
from registry.admin import ReadOnlyAdmin as RoleReadOnlyAdmin
from registry.admin import ReadOnlyInline

from .manual_rollback import rollback_manual
from .models import (
    DeliveryAttempt,
    Incident,
    IncidentEvent,
    Notification,
    Playbook,
    PlaybookStep,
    Rollback,
    StepRun,
    StepStatus,
)
from .playbook_editing import (
    EDITABLE_STEP_FIELDS,
    may_edit_playbooks,
    playbook_step_clean,
    playbook_step_create,
    playbook_step_delete,
    playbook_step_update,
    playbook_update,
)
from .selectors import completable_by, decision_options, justification_needed_for
from .steps.human import step_complete


def admin_actor(request: HttpRequest) -> Actor:
    """The logged-in user as the audit log names them (as governance's admin does)."""
    return Actor.for_user(request.user, request_id="admin")


def _error_lines(exc: DomainError) -> list[str]:
    """What a refusal says, one line per field or reason, for a form or a message."""
    if isinstance(exc, InvalidInput):
        return [f"{field}: {' '.join(problems)}" for field, problems in exc.errors.items()]
    if isinstance(exc, Conflict):
        return list(exc.reasons)
    return [str(exc)]


class ReadOnlyAdmin(RoleReadOnlyAdmin):
    """Visible to staff holding a role (as the registry and governance records are)."""


class EventInline(ReadOnlyInline, admin.TabularInline):
    model = IncidentEvent
    readonly_fields = ["at", "actor", "kind", "message", "data"]

    def has_view_permission(self, request, obj=None):
        return True


# --- manual rollback ------------------------------------------------------------------------


def rollback_choices(user) -> list[tuple[str, str]]:
    """Models with a serving version that ``user`` may roll back, labelled with that version."""
    serving = (
        Lifecycle.objects.filter(stage__in=SERVING_STAGES)
        .select_related("version__model")
        .order_by("version__model__name")
    )
    pending = set(Rollback.objects.values_list("from_version_id", flat=True))
    choices = []
    for lifecycle in serving:
        model = lifecycle.version.model
        if not can(user, Action.ROLLBACK, model=model):
            continue
        label = f"{model.name} (live: {lifecycle.version.version}, {lifecycle.stage})"
        if lifecycle.version_id in pending:
            label += " - already rolled back or being rolled back"
        choices.append((model.name, label))
    return choices


class RollbackRequestForm(forms.Form):
    model = forms.ChoiceField(
        help_text="Its live version is rolled back to the version it "
        "superseded, if that one is in warm standby."
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}),
        help_text="Why the live version is rolled back; kept on the rollback, the incident "
        "and the audit log.",
    )

    def __init__(self, *args, choices: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "---------"), *choices]


def rollback_request_view(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """The manual rollback of an ML Lead: ``rollback_manual``, the path of the API and the
    command. Refusals of the service are shown on the form."""
    if not can_on_any_model(request.user, Action.ROLLBACK):
        raise PermissionDenied("rolling back needs the 'rollback' permission")
    choices = rollback_choices(request.user)
    if request.method == "POST":
        form = RollbackRequestForm(request.POST, choices=choices)
        if form.is_valid():
            try:
                incident, rollback = rollback_manual(
                    model_name=form.cleaned_data["model"],
                    reason=form.cleaned_data["reason"],
                    actor=admin_actor(request),
                    scopes=None,
                )
            except DomainError as exc:
                if isinstance(exc, InvalidInput) and set(exc.errors) <= set(form.fields):
                    for name, problems in exc.errors.items():
                        form.add_error(name, problems)
                else:
                    prefix = "Rollback refused" if isinstance(exc, Forbidden) else "Not rolled back"
                    form.add_error(None, [f"{prefix}: {line}" for line in _error_lines(exc)])
            else:
                messages.success(
                    request,
                    f"Rollback {rollback.pk} of {rollback.model.name} "
                    f"{rollback.from_version.version} requested: incident {incident.pk} opened; "
                    "the rollback runs on the urgent queue.",
                )
                return redirect(reverse("admin:incidents_incident_change", args=[incident.pk]))
    else:
        form = RollbackRequestForm(initial={"model": request.GET.get("model", "")}, choices=choices)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Roll back a model",
        "opts": model_admin.model._meta,
        "form": form,
        "has_choices": bool(choices),
    }
    return TemplateResponse(request, "admin/incidents/rollback/request_form.html", context)


# --- playbook steps from the incident page --------------------------------------------------


def step_rows(user, incident: Incident, *, now=None) -> list[dict]:
    """The incident's steps as the change page shows them, with a form where the user may act."""
    now = now or timezone.now()
    rows = []
    for run in incident.steps.order_by("order"):
        row: dict = {
            "run": run,
            "overdue": run.status == StepStatus.WAITING
            and run.due_at is not None
            and run.due_at < now,
            "outcome": json.dumps(run.outcome, indent=2, sort_keys=True) if run.outcome else "",
            "form": None,
        }
        if completable_by(user, incident, run):
            row["form"] = {
                "id": f"complete-step-{run.order}",
                "url": reverse(
                    "admin:incidents_incident_step_complete", args=[incident.pk, run.order]
                ),
                "decisions": decision_options(user, incident, run),
                "decision_required": bool(run.decisions),
                "justification": bool(run.decisions),
                "justification_required_for": justification_needed_for(run),
            }
        rows.append(row)
    return rows


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    """Incidents with their steps; waiting steps are completed here through ``step_complete``."""

    list_display = ["id", "model", "kind", "severity", "playbook", "status", "created_at"]
    list_filter = ["status", "kind", "severity"]
    search_fields = ["model__name", "title"]
    inlines = [EventInline]
    change_form_template = "admin/incidents/incident/change_form.html"
    change_list_template = "admin/incidents/incident/change_list.html"

    def get_urls(self):
        extra = [
            path(
                "<int:pk>/steps/<int:order>/complete/",
                self.admin_site.admin_view(self.step_complete_view),
                name="incidents_incident_step_complete",
            ),
        ]
        return extra + super().get_urls()

    def changelist_view(self, request, extra_context=None):
        context = {"may_roll_back": can_on_any_model(request.user, Action.ROLLBACK)}
        return super().changelist_view(request, {**(extra_context or {}), **context})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        incident = (
            Incident.objects.select_related("model", "version", "halt").filter(pk=object_id).first()
        )
        context = {}
        if incident is not None:
            live = Lifecycle.objects.filter(
                version__model=incident.model, stage__in=SERVING_STAGES
            ).first()
            context = {
                "steps": step_rows(request.user, incident),
                "rollbacks": incident.rollbacks.select_related("from_version", "to_version"),
                "halt": incident.halt,
                "may_roll_back_model": live is not None
                and can(request.user, Action.ROLLBACK, model=incident.model),
            }
        return super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **context}
        )

    def step_complete_view(self, request: HttpRequest, pk: int, order: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        incident = get_object_or_404(Incident.objects.select_related("model"), pk=pk)
        run = get_object_or_404(StepRun, incident=incident, order=order)
        if not run.roles or not roles_of(request.user, model=incident.model) & set(run.roles):
            raise PermissionDenied(
                f"step {order} is completed by {' or '.join(run.roles) or 'the platform'}"
            )
        try:
            step_complete(
                incident_id=incident.pk,
                order=order,
                note=request.POST.get("note", ""),
                decision=request.POST.get("decision", ""),
                justification=request.POST.get("justification", ""),
                actor=admin_actor(request),
            )
        except DomainError as exc:
            for line in _error_lines(exc):
                messages.error(request, f"Step {order} not completed: {line}")
        else:
            messages.success(request, f"Step {order} ({run.action}) completed.")
        url = reverse("admin:incidents_incident_change", args=[incident.pk])
        return redirect(f"{url}#step-{order}")


@admin.register(Rollback)
class RollbackAdmin(ReadOnlyAdmin):
    """Rollbacks as they ran; "add" is an ML Lead's manual rollback request."""

    list_display = [
        "id",
        "model",
        "from_version",
        "to_version",
        "status",
        "automatic",
        "incident",
        "requested_by",
        "requested_at",
    ]
    list_filter = ["status", "automatic"]
    change_list_template = "admin/incidents/rollback/change_list.html"

    def has_add_permission(self, request, obj=None) -> bool:
        return can_on_any_model(request.user, Action.ROLLBACK)

    def add_view(self, request, form_url="", extra_context=None):
        return rollback_request_view(self, request)


class AttemptInline(ReadOnlyInline, admin.TabularInline):
    model = DeliveryAttempt
    readonly_fields = ["number", "at", "outcome", "status_code", "error", "duration_ms"]

    def has_view_permission(self, request, obj=None):
        return True


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["id", "channel", "role", "subject", "status", "attempts", "next_attempt_at"]
    list_filter = ["status", "channel"]
    inlines = [AttemptInline]


class PlaybookStepForm(forms.ModelForm):
    """Validates through the service's rules, so the form shows what the service would refuse."""

    class Meta:
        model = PlaybookStep
        fields = list(EDITABLE_STEP_FIELDS)

    def clean(self):
        cleaned = super().clean()
        if self.errors or cleaned.get("DELETE") or not self.has_changed():
            return cleaned
        step = PlaybookStep.objects.filter(pk=self.instance.pk).first()
        playbook = Playbook.objects.filter(pk=self.instance.playbook_id).first()
        if playbook is None:
            return cleaned
        names = self.changed_data if step is not None else EDITABLE_STEP_FIELDS
        values = {name: cleaned.get(name) for name in names if name in EDITABLE_STEP_FIELDS}
        try:
            playbook_step_clean(playbook, values, step=step)
        except InvalidInput as exc:
            for name, problems in exc.errors.items():
                self.add_error(name if name in self.fields else None, problems)
        return cleaned


class PlaybookStepInline(admin.TabularInline):
    model = PlaybookStep
    form = PlaybookStepForm
    extra = 0
    fields = list(EDITABLE_STEP_FIELDS)

    def has_add_permission(self, request, obj=None) -> bool:
        return may_edit_playbooks(request.user)

    def has_change_permission(self, request, obj=None) -> bool:
        return may_edit_playbooks(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return may_edit_playbooks(request.user)

    def has_view_permission(self, request, obj=None) -> bool:
        return True


@admin.register(Playbook)
class PlaybookAdmin(RoleReadOnlyAdmin):
    """Playbooks with their steps; an edit is saved by the audited services, and incidents
    already running keep the copy of the steps they started with."""

    list_display = ["number", "name", "step_count", "updated_at"]
    fields = ["number", "name", "description", "updated_at"]
    readonly_fields = ["number", "updated_at"]
    inlines = [PlaybookStepInline]

    def has_change_permission(self, request, obj=None) -> bool:
        return may_edit_playbooks(request.user)

    @admin.display(description="steps")
    def step_count(self, obj: Playbook) -> int:
        return obj.steps.count()

    def _actor(self, request) -> Actor:
        return admin_actor(request)

    def save_model(self, request, obj, form, change) -> None:
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in ("name", "description")
        }
        if changes:
            try:
                playbook_update(playbook=obj, changes=changes, actor=self._actor(request))
            except DomainError as exc:
                messages.error(request, f"Playbook not changed: {exc}")

    def save_formset(self, request, form, formset, change) -> None:
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        actor = self._actor(request)
        deleted = set(formset.deleted_forms)
        for inline in formset.forms:
            try:
                if inline in deleted:
                    if inline.instance.pk:
                        step = PlaybookStep.objects.get(pk=inline.instance.pk)
                        playbook_step_delete(step=step, actor=actor)
                        formset.deleted_objects.append(step)
                    continue
                if not inline.has_changed():
                    continue
                if inline.instance.pk:
                    names = [n for n in inline.changed_data if n in EDITABLE_STEP_FIELDS]
                    step = playbook_step_update(
                        step=PlaybookStep.objects.get(pk=inline.instance.pk),
                        changes={n: inline.cleaned_data[n] for n in names},
                        actor=actor,
                    )
                    formset.changed_objects.append((step, names))
                else:
                    step = playbook_step_create(
                        playbook=form.instance,
                        values={n: inline.cleaned_data.get(n) for n in EDITABLE_STEP_FIELDS},
                        actor=actor,
                    )
                    formset.new_objects.append(step)
            except DomainError as exc:
                messages.error(request, f"Step not saved: {exc}")


from . import admin_ethics  # noqa: E402, F401  (EthicsPolicy's admin)
