"""Per-model admin pages: a holder of a per-model grant sees and picks only their models.

The admin lists rows of every model by default; a page that per-model grant holders may open
(the monitoring and ethics policies) uses this mixin so its list, its change pages and its add
form's model choices follow the same grants as the API (``governance.permissions``).
"""

from __future__ import annotations

from .permissions import can
from .roles import Action
from .selectors import models_allowing


class ModelScopedAdminMixin:
    """Rows of models the user may read; the add form offers the models ``edit_action`` allows."""

    edit_action: str = ""

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        return qs.filter(model__in=models_allowing(request.user, Action.READ))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model":
            kwargs["queryset"] = models_allowing(request.user, self.edit_action).order_by("name")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class PerModelViewMixin:
    """Opens a read-only admin page to staff whose grants are only per model, scoped to them.

    ``ReadOnlyAdmin`` admits staff holding a global grant (a role group); a person granted a role
    on one model had no admin at all. Here they see the rows of the models they may read
    (``model_lookup`` leads from a row to its model), and no filter lists other models' names.
    """

    model_lookup: str = "model"

    def _global_reader(self, request) -> bool:
        user = request.user
        return user.is_superuser or can(user, Action.READ)

    def has_view_permission(self, request, obj=None) -> bool:
        if super().has_view_permission(request, obj):
            return True
        user = request.user
        if not (user.is_active and user.is_staff):
            return False
        allowed = models_allowing(user, Action.READ)
        if obj is None:
            return allowed.exists()
        return self.model.objects.filter(
            pk=obj.pk, **{f"{self.model_lookup}__in": allowed}
        ).exists()

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if self._global_reader(request):
            return qs
        return qs.filter(**{f"{self.model_lookup}__in": models_allowing(request.user, Action.READ)})

    def get_list_filter(self, request):
        filters = super().get_list_filter(request)
        if self._global_reader(request):
            return filters
        return [f for f in filters if not (isinstance(f, str) and f.endswith("model"))]
