"""Admin views of incidents, rollbacks and the outbox (read-only), and of the playbooks, whose
edits go through the audited services of ``incidents.playbooks``."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from governance.audit import Actor
from registry.admin import ReadOnlyAdmin as RoleReadOnlyAdmin
from registry.errors import DomainError, InvalidInput

from .models import (
    DeliveryAttempt,
    Incident,
    IncidentEvent,
    Notification,
    Playbook,
    PlaybookStep,
    Rollback,
    StepRun,
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


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class EventInline(admin.TabularInline):
    model = IncidentEvent
    extra = 0
    can_delete = False
    readonly_fields = ["at", "actor", "kind", "message", "data"]

    def has_add_permission(self, request, obj=None):
        return False


class StepRunInline(admin.TabularInline):
    """The incident's copy of its playbook; completed through the API, never edited here."""

    model = StepRun
    extra = 0
    can_delete = False
    fields = [
        "order",
        "action",
        "roles",
        "automated",
        "task",
        "status",
        "due_at",
        "escalated_at",
        "completed_at",
        "completed_by",
        "decision",
        "note",
        "justification",
        "outcome",
        "last_error",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["id", "model", "kind", "severity", "playbook", "status", "created_at"]
    list_filter = ["status", "kind", "severity"]
    search_fields = ["model__name", "title"]
    inlines = [StepRunInline, EventInline]


@admin.register(Rollback)
class RollbackAdmin(ReadOnlyAdmin):
    list_display = ["id", "model", "from_version", "to_version", "status", "requested_at"]
    list_filter = ["status", "automatic"]


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "at", "outcome", "status_code", "error", "duration_ms"]

    def has_add_permission(self, request, obj=None):
        return False


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
        return Actor.for_user(request.user, request_id="admin")

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
