"""The incident pages and My work: thin views over ``console.incidents`` and ``console.work``.

A step is completed through ``incidents.playbooks.step_complete`` behind the checks of the API's
step completion (``incidents.api.StepCompleteView``): the incident's model must be readable (404
otherwise, naming nothing), the user must hold the ``complete_step`` permission somewhere (403),
and the service checks the step's own roles and writes the same audit event.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from governance.permissions import can_on_any_model
from governance.roles import Action
from incidents.steps.human import step_complete
from platform_core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound

from . import incidents as selectors
from .views import console_actor
from .work import my_work


@login_required
def incident_list(request):
    """Incidents of the models one may read: open first, filtered by status and model."""
    return render(
        request, "console/incidents.html", selectors.incident_list(request.user, request.GET)
    )


def _incident_or_404(request, pk: int):
    incident = selectors.readable_incident(request.user, pk)
    if incident is None:
        raise Http404(f"no incident {pk}")
    return incident


@login_required
def incident_detail(request, pk: int):
    """One incident: status, checklist with the forms the user may use, decisions, rollback,
    halt, alerts and the timeline in words."""
    incident = _incident_or_404(request, pk)
    return render(request, "console/incident.html", selectors.incident_page(request.user, incident))


@login_required
@require_POST
def incident_step_complete(request, pk: int, order: int):
    """Complete a waiting step; a refusal shows the page again with the form as it was filled
    in, under the status the API would answer (400, 403, 409)."""
    incident = _incident_or_404(request, pk)
    values = {k: request.POST.get(k, "") for k in ("note", "decision", "justification")}
    try:
        if not can_on_any_model(request.user, Action.COMPLETE_STEP):
            raise Forbidden("completing playbook steps needs the 'complete_step' permission")
        run = step_complete(
            incident_id=incident.pk,
            order=order,
            actor=console_actor(request),
            **values,
        )
    except NotFound as exc:
        raise Http404(str(exc)) from exc
    except DomainError as exc:
        status = {InvalidInput: 400, Forbidden: 403, Conflict: 409}.get(type(exc), 400)
        if isinstance(exc, InvalidInput):
            errors = [f"{name}: {' '.join(problems)}" for name, problems in exc.errors.items()]
        elif isinstance(exc, Conflict):
            errors = list(exc.reasons)
        else:
            errors = [str(exc)]
        messages.error(request, f"Step {order} not completed: " + "; ".join(errors))
        incident.refresh_from_db()
        context = selectors.incident_page(
            request.user, incident, failed={"order": order, "values": values, "errors": errors}
        )
        return render(request, "console/incident.html", context, status=status)
    messages.success(request, f"Step {run.order} ({run.action}) completed.")
    return redirect(f"{reverse('console:incident', args=[incident.pk])}#step-{run.order}")


@login_required
def work(request):
    """My work: sign-offs, incident steps, stays over their limit and audit tasks waiting for
    the user's roles, soonest due first, each with a link to act."""
    request.my_work = my_work(request.user)  # the nav's count reads it too (context_processors)
    context = {"work": request.my_work, "now": timezone.now()}
    return render(request, "console/work.html", context)
