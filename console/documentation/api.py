"""``GET /api/v1/models/{name}/versions/{v}/documentation/``: the pack as JSON, HTML or PDF.

Who may read the version may read its pack (``RolePermission`` with ``read`` on the model, the
version API's rule); the audit trail inside it follows the audit API's rule (``read_audit`` for
the model), and is withheld, not refused, for other readers.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.request import Request

from governance.permissions import can, request_scopes
from governance.roles import Action
from platform_core.api.params import bool_param, choice_param, int_param
from registry import services as registry_services
from registry.models import ModelVersion

from . import pack, render

_ACCEPT = {"application/pdf": "pdf", "text/html": "html", "application/json": "json"}


class _JsonForErrors(BaseContentNegotiation):
    """Errors render as JSON whatever the Accept header; the view chooses the pack's format
    itself (DRF's own ``?format=`` override would answer an unknown format with a 404)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


def requested_format(request: Request) -> str:
    """``?format=`` wins (400 naming it when unknown); else the first known Accept type; JSON."""
    chosen = choice_param(request.query_params, "format", render.FORMATS)
    if chosen:
        return chosen
    for part in request.headers.get("Accept", "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


def pack_response(data: bytes, fmt: str, version: ModelVersion, seq: int, *, download: bool):
    response = HttpResponse(data, content_type=render.MEDIA_TYPES[fmt])
    filename = f"{version.model.name}-{version.version}-documentation-seq{seq}.{fmt}"
    disposition = "attachment" if download else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{filename}"'
    return response


class DocumentationView(GenericAPIView):
    required_actions = {"GET": Action.READ}
    content_negotiation_class = _JsonForErrors
    queryset = ModelVersion.objects.none()  # for the schema only

    @extend_schema(
        summary="The technical-documentation pack of a version (EU AI Act Annex IV)",
        description=(
            "One document with the sections of Annex IV: general description and intended "
            "purpose (model card), development (data range and hash, hyperparameters, features, "
            "training run), validation (gate reports with their policy versions, fairness per "
            "group), risk management and human oversight (approvals, halts, incidents with their "
            "playbook steps, rollbacks), monitoring plan, post-market results (runs, alerts, "
            "series summaries), logging (Article 12: what is logged, retention) and changes (the "
            "version's audit trail and the chain's verification up to the cut). Reproducible: "
            "built as of one audit sequence number (the chain head, or `as_of`), it is "
            "byte-identical each time; `document.built_from` names that event's seq and hash, to "
            "check with `manage.py verify_audit`. The audit trail is included for holders of "
            "`read_audit` on the model and withheld (null) for other readers. The format is "
            "`?format=` or, without it, the Accept header (application/json, text/html, "
            "application/pdf); JSON by default."
        ),
        parameters=[
            OpenApiParameter(
                "format", str, enum=list(render.FORMATS), description="json (default), html, pdf"
            ),
            OpenApiParameter(
                "as_of",
                int,
                description="Build as of this audit sequence number (default: the chain head). "
                "The audit trail stops there; dated records are those recorded by that event's "
                "time (document.as_of says what else).",
            ),
            OpenApiParameter("download", bool, description="true: Content-Disposition attachment"),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT, description="The pack (keys sorted)"
            ),
            (200, "text/html"): OpenApiResponse(OpenApiTypes.STR, description="The pack as HTML"),
            (200, "application/pdf"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The pack as PDF"
            ),
        },
    )
    def get(self, request: Request, name: str, version: str) -> HttpResponse:
        fmt = requested_format(request)
        as_of = int_param(request.query_params, "as_of", minimum=1)
        download = bool_param(request.query_params, "download", default=False)
        instance = registry_services.version_get(name, version)
        cut = pack.cut_at(instance, as_of)
        visible = can(request.user, Action.READ_AUDIT, model=name, scopes=request_scopes(request))
        data = render.render(pack.build(instance, cut, audit_visible=visible), fmt)
        return pack_response(data, fmt, instance, cut.seq, download=download)
