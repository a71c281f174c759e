"""Per-model admin pages: a holder of a per-model grant sees and picks only their models.

The admin lists rows of every model by default; a page that per-model grant holders may open
(the monitoring and ethics policies) uses this mixin so its list, its change pages and its add
form's model choices follow the same grants as the API (``governance.permissions``).
"""

from __future__ import annotations

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
