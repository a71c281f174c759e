"""Reads behind the audit page and its CSV export.

Who sees what is the audit API's rule (``governance.api.audit_views.readable_events``): a global
``read_audit`` grant reads every event, a per-model one the events of those models, anyone else
is refused. Filters are the API's (``filter_events``), so the page, the export and
``GET /api/v1/audit/`` always agree on what a filter selects.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import date, timedelta

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import QueryDict

from governance import wording
from governance.api.audit_views import filter_events, readable_events
from governance.models import AuditEvent, AuditVerificationState
from governance.permissions import can, can_on_any_model
from governance.roles import Action
from platform_core.errors import InvalidInput

PAGE_SIZE = 50
FILTERS = ("model", "actor", "action", "since", "until")


def _api_params(params: QueryDict) -> dict[str, str]:
    """The page's filters as the API's: ``until`` is a day the person means to include."""
    out = {k: params.get(k, "").strip() for k in FILTERS if params.get(k, "").strip()}
    until = out.get("until")
    if until:
        # a datetime (or nonsense) is left to the API's parser, which names the field
        with suppress(ValueError):
            out["until"] = (date.fromisoformat(until) + timedelta(days=1)).isoformat()
    return out


def events(request) -> tuple[QuerySet[AuditEvent], dict[str, str], dict[str, str]]:
    """(filtered events newest first, the filters applied, errors by field). 403 without the
    permission the audit API asks for."""
    if not (request.user.is_superuser or can_on_any_model(request.user, Action.READ_AUDIT)):
        raise PermissionDenied("Reading the audit log needs the read_audit permission.")
    qs = AuditEvent.objects.all() if request.user.is_superuser else readable_events(request)
    chosen = {k: request.GET.get(k, "").strip() for k in FILTERS}
    errors: dict[str, str] = {}
    try:
        qs = filter_events(qs, _api_params(request.GET))
    except InvalidInput as exc:
        errors = {k: " ".join(v) if isinstance(v, list) else str(v) for k, v in exc.errors.items()}
        qs = qs.none()
    return qs.order_by("-seq"), chosen, errors


def _row(event: AuditEvent) -> tuple:
    """(event, sentence, detail rows, whether any field had a value before)."""
    rows = wording.details(event)
    return event, wording.describe(event), rows, any(b != wording.MISSING for _, b, _ in rows)


def audit_page(request) -> dict:
    qs, chosen, errors = events(request)
    readable = AuditEvent.objects.all() if request.user.is_superuser else readable_events(request)
    models = sorted(
        n for n in readable.order_by().values_list("model_name", flat=True).distinct() if n
    )
    actions = sorted(readable.order_by().values_list("action", flat=True).distinct())
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    kept = request.GET.copy()
    kept.pop("page", None)
    is_global = request.user.is_superuser or can(request.user, Action.READ_AUDIT)
    return {
        "page": page,
        "rows": [_row(e) for e in page.object_list],
        "chosen": chosen,
        "errors": errors,
        "models": models,
        "actions": actions,
        "query": kept.urlencode(),
        "is_global": is_global,
        # The chain is one log: its verification speaks of every event, so only global readers.
        "verification": AuditVerificationState.objects.filter(pk=1).first() if is_global else None,
    }


CSV_HEADER = (
    "seq",
    "created_at",
    "actor",
    "action",
    "model",
    "object_type",
    "object_id",
    "object",
    "reason",
    "before",
    "after",
    "request_id",
    "hash",
)


def csv_rows(qs: QuerySet[AuditEvent]):
    """The export's rows, read in chunks so a long log streams in constant memory."""
    for e in qs.iterator(chunk_size=1000):
        yield (
            e.seq,
            e.created_at.isoformat(),
            e.actor,
            e.action,
            e.model_name,
            e.object_type,
            e.object_id,
            e.object_repr,
            e.reason,
            wording.as_json(e.before),
            wording.as_json(e.after),
            e.request_id,
            e.hash,
        )
