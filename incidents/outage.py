"""The gateway's outage hook (``settings.SERVING_OUTAGE_HOOK``): playbook 3.

When the live model cannot serve (an artifact that does not load, a predict that raises), the
gateway answers from its stale cache and calls ``report_outage`` from a background thread, at most
once per (model, kind) per ``SERVING_OUTAGE_REPORT_SECONDS``. The report opens an ``outage``
incident (high, playbook 3, whose automated steps serve stale and page on-call) or, while one is
active, joins it with a "failed again" timeline event. It runs off the request path, so it never
raises: a failure is logged (the next report tries again).
"""

from __future__ import annotations

import logging

from governance import audit
from governance.audit import Actor
from governance.lifecycle import live_lifecycle
from governance.premises import Premise
from registry.models import ModelVersion, RegisteredModel

from .models import EventKind, IncidentKind
from .services import incident_active, incident_open
from .timeline import add_event

logger = logging.getLogger(__name__)

SYSTEM = Actor.system("incidents.outage")


def report_outage(*, model: str, version: str | None, kind: str, detail: str) -> dict | None:
    """Open or join the model's outage incident; None (logged) when that cannot be done."""
    try:
        return outage_report(model_name=model, version=version, kind=kind, detail=detail)
    except Exception:
        logger.exception("outage report of %s %s (%s) failed: %s", model, version, kind, detail)
        return None


def outage_report(
    *, model_name: str, version: str | None, kind: str, detail: str, actor: Actor = SYSTEM
) -> dict | None:
    """The service behind the hook: returns ``{"incident", "action"}``, None (unknown model), or
    a skip (``governance.premises``) when ``version`` no longer serves."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        logger.error("outage of unknown model %r (%s): %s", model_name, kind, detail)
        return None
    failing = ModelVersion.objects.filter(model=model, version=version).first() if version else None
    what = f"{model.name} {version or '(no version)'} cannot serve ({kind}): {detail}"
    premise = Premise(
        "incidents.outage_report",
        f"{version} is still the live version of {model.name}"
        if version
        else f"{model.name} has a live version",
        model_id=model.pk,
        model_name=model.name,
    )
    with premise.locked():
        # The report comes from a background thread or a delayed task: a version that was
        # rolled back or replaced meanwhile is no outage of the platform (issue 16).
        live = live_lifecycle(model)
        if failing is not None and (live is None or live.version_id != failing.pk):
            now = f"{live.version.version} serves now" if live else "no version serves now"
            return premise.skip(
                f"superseded: {version} is no longer the live version; {now}", obj=model
            )
        incident = incident_active(model, IncidentKind.OUTAGE)
        opened = incident is None
        if opened:
            incident = incident_open(
                model=model,
                kind=IncidentKind.OUTAGE,
                severity="high",
                title=f"outage of {model.name}: {kind}",
                version=failing,
                actor=actor,
                message=f"opened by the gateway: {what}",
                data={"version": version, "kind": kind},
            )
        else:
            add_event(
                incident,
                kind=EventKind.ALERT,
                actor=actor.label,
                message=f"failed again: {what}",
                data={"version": version, "kind": kind},
            )
        audit.record(
            actor=actor,
            action="incidents.outage_reported",
            obj=incident,
            after={
                "incident": incident.pk,
                "opened": opened,
                "version": version,
                "kind": kind,
                "detail": detail[:2000],
            },
            reason=what[:2000],
        )
    return {"incident": incident.pk, "action": "opened" if opened else "joined"}
