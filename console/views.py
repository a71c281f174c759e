"""The console's pages: thin views over ``console.selectors``; actions call the apps' services."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from governance.audit import Actor
from governance.selectors import readable_models
from monitoring.alerts import alert_acknowledge, alert_resolve
from platform_core.errors import DomainError
from serving import halt as halt_service
from serving.predicate import parse_where

from . import selectors


def console_actor(request) -> Actor:
    """The signed-in user as the audit log names an action taken in the console."""
    return Actor.for_user(request.user, request_id="console")


def _halt_condition(request):
    """The halt form's optional ``where`` condition, parsed (InvalidInput when malformed)."""
    condition = request.POST.get("where", "").strip()
    return parse_where(condition) if condition else None


@login_required
def overview(request):
    """The landing page: what is live, what is halted, what is on fire, what is overdue."""
    context = {"overview": selectors.overview(request.user), "now": timezone.now()}
    return render(request, "console/overview.html", context)


@login_required
def overview_rows(request):
    """The overview's table alone, which the page fetches every 30 s to stay current."""
    context = {"overview": selectors.overview(request.user), "now": timezone.now()}
    return render(request, "console/_overview_rows.html", context)


@login_required
def halts(request):
    """The kill switch: engaged halts with their two-person release, and the engage form."""
    return render(request, "console/halts.html", selectors.halt_page(request.user))


@login_required
@require_POST
def halt_engage(request):
    """Engage a halt through the same service as the API (its role check and audit event)."""
    scope = request.POST.get("scope", "").strip()
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Tick the confirmation box: a halt stops every prediction.")
        return redirect("console:halts")
    try:
        halt, created = halt_service.halt_engage(
            scope=scope,
            reason=request.POST.get("reason", ""),
            where=_halt_condition(request),
            actor=console_actor(request),
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        where = "every model" if scope == selectors.GLOBAL else scope
        if halt.where:
            where = f"{scope} where {halt.where_text}"
        messages.success(
            request,
            f"Inference of {where} is halted." if created else f"{where} was already halted.",
        )
    return redirect("console:halts")


@login_required
@require_POST
def halt_release(request):
    """One of the two release approvals (an ML Lead's and an Ethics Officer's, two people)."""
    scope = request.POST.get("scope", "").strip()
    try:
        outcome = halt_service.halt_release_approve(
            scope=scope,
            comment=request.POST.get("comment", ""),
            where=_halt_condition(request),
            actor=console_actor(request),
        )
    except DomainError as exc:
        messages.error(request, str(exc))
    else:
        if outcome.halt.where:
            scope = f"{scope} where {outcome.halt.where_text}"
        if outcome.released:
            messages.success(request, f"The halt of {scope} is released: predictions resume.")
        else:
            waiting = ", ".join(halt_service.waiting_for(outcome.halt))
            messages.success(
                request,
                f"Your approval as {outcome.approval.role} is recorded; the release still needs "
                f"{waiting}.",
            )
    return redirect("console:halts")


@login_required
def alerts(request):
    """Alerts to filter, acknowledge and resolve (with a note, audited)."""
    return render(request, "console/alerts.html", selectors.alert_page(request.user, request.GET))


@login_required
@require_POST
def alert_act(request, pk: int, verb: str):
    """Acknowledge or resolve through ``monitoring.alerts`` (its permission check and audit)."""
    service = {"acknowledge": alert_acknowledge, "resolve": alert_resolve}.get(verb)
    if service is None or not readable_models(request.user).filter(alerts__pk=pk).exists():
        raise Http404(f"no alert {pk}")
    try:
        service(
            alert_id=pk,
            actor=console_actor(request),
            note=request.POST.get("note", ""),
        )
    except DomainError as exc:
        messages.error(request, f"Alert {pk}: {exc}")
    else:
        messages.success(request, f"Alert {pk} {verb}d.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("console:alerts")
    return redirect(back)
