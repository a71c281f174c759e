"""Who may do what: role grants (global or per model) narrowed by the token's scopes.

Deny by default: an API view that does not name the action it needs refuses every request.
"""

from __future__ import annotations

from django.db.models import Q
from rest_framework.permissions import BasePermission

from registry.models import RegisteredModel

from .models import RoleGrant
from .roles import actions_for


def roles_of(user, *, model: RegisteredModel | str | None = None, scopes=None) -> set[str]:
    """The roles ``user`` holds for ``model`` (global grants always count), narrowed by scopes."""
    if user is None or not user.is_authenticated or not user.is_active:
        return set()
    grants = RoleGrant.objects.filter(user=user)
    if model is None:
        grants = grants.filter(model__isnull=True)
    elif isinstance(model, str):
        grants = grants.filter(Q(model__isnull=True) | Q(model__name=model))
    else:
        grants = grants.filter(Q(model__isnull=True) | Q(model=model))
    roles = set(grants.values_list("role", flat=True))
    if scopes:
        roles &= set(scopes)
    return roles


def can(user, action: str, *, model: RegisteredModel | str | None = None, scopes=None) -> bool:
    return action in actions_for(roles_of(user, model=model, scopes=scopes))


def can_on_any_model(user, action: str, *, scopes=None) -> bool:
    """For list views that filter to what the user may see: any grant with the action will do."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    roles = set(RoleGrant.objects.filter(user=user).values_list("role", flat=True))
    if scopes:
        roles &= set(scopes)
    return action in actions_for(roles)


def request_scopes(request) -> list[str] | None:
    scope = getattr(getattr(request, "auth", None), "scope", None)
    return list(scope.roles) if scope is not None and scope.roles else None


class RolePermission(BasePermission):
    """Checks ``view.required_actions[method]`` (or ``required_action``) for the view's model.

    The model comes from the URL kwarg ``name`` when present; 403 comes before any 404 or 409 so
    an unauthorised caller learns nothing about state.
    """

    message = "You do not hold a role that allows this."

    def has_permission(self, request, view) -> bool:
        action = getattr(view, "required_actions", {}).get(request.method) or getattr(
            view, "required_action", None
        )
        if action is None:
            return False
        if request.method == "OPTIONS":
            action = "read"
        model = view.kwargs.get("name") if hasattr(view, "kwargs") else None
        scopes = request_scopes(request)
        if model is None and request.method in getattr(view, "any_model_for", ()):
            allowed = can_on_any_model(request.user, action, scopes=scopes)
        else:
            allowed = can(request.user, action, model=model, scopes=scopes)
        if not allowed:
            self.message = (
                f"This needs the '{action}' permission"
                + (f" for model '{model}'" if model else "")
                + ", which none of your roles grants."
            )
        return allowed
