"""The model page and the JSON series its charts draw (issue 12): thin views over
``console.model_page``. A model the user may not read is a 404, its existence unconfirmed."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from governance.roles import Action
from governance.selectors import models_allowing
from platform_core.errors import InvalidInput
from registry.models import RegisteredModel

from . import model_page


def _readable(user, name: str) -> RegisteredModel:
    return get_object_or_404(models_allowing(user, Action.READ), name=name)


@login_required
@require_GET
def model(request, name: str):
    """The lifecycle, the live version's facts and the monitoring charts of a period."""
    obj = _readable(request.user, name)
    errors: dict[str, list[str]] = {}
    try:
        period = model_page.parse_period(request.GET)
    except InvalidInput as exc:
        errors = exc.errors
        period = model_page.parse_period({})
    data = model_page.series(obj, period)
    context = {
        "page": model_page.model_page(obj),
        "period": period,
        "period_days": model_page.PERIOD_DAYS,
        "chosen": {k: request.GET.get(k, "") for k in ("days", "from", "to")},
        "errors": errors,
        "series": data,
        "summaries": model_page.summaries(data),
        "series_url": reverse("console:model-series", args=[obj.name]) + "?" + period.query,
    }
    return render(request, "console/model.html", context)


@login_required
@require_GET
def model_series(request, name: str):
    """The charts' data for ``?from=&to=`` (dates or ISO datetimes) or ``?days=``; the shape is
    documented in ``static/console/charts.js``. A bad parameter is a 400 naming it."""
    obj = _readable(request.user, name)
    try:
        period = model_page.parse_period(request.GET)
    except InvalidInput as exc:
        return JsonResponse({"detail": "Invalid input.", "errors": exc.errors}, status=400)
    response = JsonResponse(model_page.series(obj, period))
    response["Cache-Control"] = "private, no-store"
    return response
