"""Limit/offset pagination with a ceiling: ``?limit=100000`` is a 400, not a huge page; and the
list answer every paginated endpoint gives."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response

from .params import int_param

if TYPE_CHECKING:  # DRF imports this module while it loads its generics (DEFAULT_PAGINATION_CLASS)
    from rest_framework.generics import GenericAPIView


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """``limit`` from 1 to ``API_MAX_PAGE_SIZE`` and ``offset`` >= 0, else 400 naming the param.

    DRF's own class silently replaces a malformed limit with the default and clamps nothing, so
    a client never learns its request was not what it asked for; a 400 says so.
    """

    @property
    def max_limit(self) -> int:  # read per request, so tests and deployments may change it
        return int(getattr(settings, "API_MAX_PAGE_SIZE", 500))

    def get_limit(self, request) -> int:
        default = self.default_limit or settings.REST_FRAMEWORK.get("PAGE_SIZE") or 100
        return int_param(
            request.query_params,
            self.limit_query_param,
            default=min(default, self.max_limit),
            minimum=1,
            maximum=self.max_limit,
        )

    def get_offset(self, request) -> int:
        return int_param(request.query_params, self.offset_query_param, default=0, minimum=0)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_limit})
                parameter["description"] += f" (1 to {self.max_limit}; more is a 400)"
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"].update({"minimum": 0})
        return parameters


def page_response(view: GenericAPIView, queryset) -> Response:
    """One page of ``queryset`` shaped by the view's ``serializer_class``, with count, next and
    previous: what every paginated list endpoint answers (DRF's ``ListModelMixin.list``)."""
    page = view.paginate_queryset(queryset)
    return view.get_paginated_response(view.get_serializer(page, many=True).data)
