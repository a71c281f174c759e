"""Read-only admin views of incidents, rollbacks and the outbox (changes go through services)."""

from django.contrib import admin

from .models import DeliveryAttempt, Incident, IncidentEvent, Notification, Rollback


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


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["id", "model", "kind", "severity", "playbook", "status", "created_at"]
    list_filter = ["status", "kind", "severity"]
    search_fields = ["model__name", "title"]
    inlines = [EventInline]


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
