"""Thin REST views: validate, call a service or selector, shape the answer."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from platform_core.api.pagination import page_response
from platform_core.api.params import choice_param
from platform_core.errors import NotFound
from registry import services as registry_services
from registry.models import ModelVersion, RegisteredModel
from registry.services import VersionSpec

from .. import selectors, services
from ..audit import Actor
from ..models import Stage
from ..permissions import request_scopes
from ..roles import Action
from .idempotency import idempotent
from .serializers import (
    ModelCreateSerializer,
    ModelSerializer,
    VersionCreateSerializer,
    VersionSerializer,
    validated,
)


def actor_of(request: Request) -> Actor:
    scope = getattr(getattr(request, "auth", None), "scope", None)
    return Actor.for_user(
        request.user,
        token_name=scope.name if scope is not None else "",
        request_id=request.headers.get("X-Request-ID", ""),
    )


class ModelListCreateView(GenericAPIView):
    required_actions = {"GET": Action.READ, "POST": Action.REGISTER}
    any_model_for = {"GET"}
    serializer_class = ModelSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no real user
            return RegisteredModel.objects.none()
        return selectors.model_list(self.request.user, scopes=request_scopes(self.request))

    @extend_schema(summary="List the models you may read", responses=ModelSerializer(many=True))
    def get(self, request: Request) -> Response:
        return page_response(self, self.get_queryset())

    @extend_schema(
        summary="Register a model",
        request=ModelCreateSerializer,
        responses={201: ModelSerializer},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = validated(ModelCreateSerializer, request)
        model = services.model_register(**body, actor=actor_of(request))
        return Response(
            ModelSerializer(model, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


class ModelDetailView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    serializer_class = ModelSerializer

    @extend_schema(summary="Read a model")
    def get(self, request: Request, name: str) -> Response:
        readable = selectors.model_list(request.user, scopes=request_scopes(request))
        instance = readable.filter(name=name).first()
        if instance is None:
            raise NotFound(f"no model named '{name}'")
        return Response(ModelSerializer(instance, context={"request": request}).data)


class VersionListCreateView(GenericAPIView):
    required_actions = {"GET": Action.READ, "POST": Action.REGISTER}
    serializer_class = VersionSerializer
    queryset = ModelVersion.objects.none()  # for the schema only; get() builds the real one

    @extend_schema(
        summary="List a model's versions, newest first",
        parameters=[
            OpenApiParameter(
                "stage", str, enum=Stage.values, description="Only versions in this stage"
            )
        ],
        responses=VersionSerializer(many=True),
    )
    def get(self, request: Request, name: str) -> Response:
        model = registry_services.model_get(name)
        stage = choice_param(request.query_params, "stage", Stage.values)
        return page_response(self, selectors.version_list(model, stage=stage))

    @extend_schema(
        summary="Register a version (from an MLflow model version or an artifact URI)",
        request=VersionCreateSerializer,
        responses={201: VersionSerializer},
    )
    @idempotent
    def post(self, request: Request, name: str) -> Response:
        registry_services.model_get(name)  # 404 before validating the body
        spec = VersionSpec(**validated(VersionCreateSerializer, request))
        version = services.version_register(model_name=name, spec=spec, actor=actor_of(request))
        return version_response(request, version.model, version.version, code=201)


class VersionDetailView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    serializer_class = VersionSerializer

    @extend_schema(summary="Read a version: its facts, stage and links")
    def get(self, request: Request, name: str, version: str) -> Response:
        return version_response(request, registry_services.model_get(name), version)


def version_response(
    request: Request, model: RegisteredModel, version: str, *, code: int = status.HTTP_200_OK
) -> Response:
    """The version as ``GET .../versions/{version}/`` shows it, also after a write that changed
    it (registration, a transition); the registry's 404 when the model has no such version."""
    instance = selectors.version_list(model).filter(version=version).first()
    instance = instance or registry_services.version_get(model.name, version)  # raises the 404
    return Response(VersionSerializer(instance, context={"request": request}).data, status=code)


# GETs across models: the permission check lets any reader in (``any_model_for``) and the view
# narrows its rows to the models the caller may read. (A comment: drf-spectacular would publish
# a docstring as the description of every subclass without one.)
class CrossModelReadView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    any_model_for = {"GET"}


def one_or_404(qs: QuerySet, pk: int, what: str) -> Any:
    """Row ``pk`` of ``qs`` (narrowed to what the caller may read), else 404 naming ``what``.

    The same 404 for a row that does not exist and one of a model the caller may not read.
    """
    found = qs.filter(pk=pk).first()
    if found is None:
        raise NotFound(f"no {what} {pk}")
    return found
