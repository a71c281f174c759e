"""The GET/PUT pair behind every per-model policy the API exposes (artifact, ethics)."""

from __future__ import annotations

from typing import Any

from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from registry import services as registry_services
from registry.models import RegisteredModel

from ..audit import Actor
from ..permissions import request_scopes
from .idempotency import idempotent
from .serializers import validated
from .views import actor_of


# GET shows a model's policy; PUT validates the body with ``serializer_class`` and replaces it.
# A subclass says how its policy is shown and replaced, and documents both methods with
# ``extend_schema_view``: the request handling (idempotency, actor, scopes) stays in one place.
# (A comment, not a docstring: drf-spectacular would publish a docstring as the GET description.)
class ModelPolicyView(GenericAPIView):
    def policy_shown(self, model: RegisteredModel) -> dict[str, Any]:
        raise NotImplementedError

    def policy_replace(
        self, name: str, values: dict[str, Any], *, actor: Actor, scopes
    ) -> dict[str, Any]:
        """The new policy as shown; ``values`` is the validated body."""
        raise NotImplementedError

    def before_body(self, name: str) -> None:
        """Runs before the body is validated (e.g. a 404 for an unknown model first)."""

    def get(self, request: Request, name: str) -> Response:
        return Response(self.policy_shown(registry_services.model_get(name)))

    @idempotent
    def put(self, request: Request, name: str) -> Response:
        self.before_body(name)
        shown = self.policy_replace(
            name,
            validated(self.serializer_class, request),
            actor=actor_of(request),
            scopes=request_scopes(request),
        )
        return Response(shown)
