"""Read-only governance records in the admin; changes go through audited services."""

from __future__ import annotations

from django.contrib import admin

from registry.admin import ReadOnlyAdmin

from .models import AuditEvent, Lifecycle, RoleGrant, TokenScope


@admin.register(Lifecycle)
class LifecycleAdmin(ReadOnlyAdmin):
    list_display = ["version", "stage", "stage_entered_at", "promoted_at"]
    list_filter = ["stage", "version__model"]
    search_fields = ["version__model__name", "version__version"]
    list_select_related = ["version__model"]


@admin.register(RoleGrant)
class RoleGrantAdmin(ReadOnlyAdmin):
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
    list_display = ["seq", "created_at", "actor", "action", "object_repr", "model_name"]
    list_filter = ["action", "model_name"]
    search_fields = ["actor", "action", "object_repr", "reason", "request_id"]
    date_hierarchy = "created_at"
