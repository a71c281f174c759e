"""The console's documentation page of a version and its downloads (JSON, HTML, PDF).

Who may see the version page may see and download its pack (``models_allowing(user, read)``, a
404 otherwise); the audit trail inside follows the audit page's rule: a superuser or a holder of
``read_audit`` for the model.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render

from governance.audit import Verification
from governance.permissions import can
from governance.roles import Action
from governance.selectors import models_allowing
from platform_core.api.params import choice_param, int_param
from platform_core.errors import InvalidInput
from registry.models import ModelVersion

from . import pack
from . import render as renderers
from .api import pack_response


def _version(user, name: str, version: str) -> ModelVersion:
    found = (
        ModelVersion.objects.select_related("model", "responsible_engineer", "registered_by")
        .filter(model__in=models_allowing(user, Action.READ), model__name=name, version=version)
        .first()
    )
    if found is None:
        raise Http404(f"no version {version} of {name}")
    return found


def _audit_visible(user, name: str) -> bool:
    return user.is_superuser or can(user, Action.READ_AUDIT, model=name)


def _counts(body: dict) -> list[tuple[str, int | str]]:
    oversight = body["s4_risk_management_and_human_oversight"]
    results = body["s6_post_market_results"]
    trail = body["s8_changes"]["audit_trail"]
    return [
        ("Gate reports", len(body["s3_validation"]["gate_reports"])),
        ("Approvals", len(oversight["approvals"])),
        ("Halts", len(oversight["halts"])),
        ("Incidents", len(oversight["incidents"])),
        ("Rollbacks", len(oversight["rollbacks"])),
        ("Monitor runs", len(results["runs"])),
        ("Alerts", len(results["alerts"])),
        ("Metric series", len(results["series"])),
        ("Audit events", len(trail) if trail is not None else "withheld (needs read_audit)"),
    ]


def _verified_how(check: Verification, seq: int) -> str:
    """What this build walked, in words (the pack itself says how, the same for every build)."""
    prefix = check.verified_before
    if prefix is None:
        return f"every event walked now, seq 1 to {seq}"
    try:
        when = datetime.fromisoformat(prefix.recorded_at).astimezone(UTC)
        at = f"{when:%Y-%m-%d %H:%M:%S} UTC"
    except ValueError:
        at = prefix.recorded_at
    earlier = f"seq 1 to {prefix.seq} verified by an earlier walk at {at}"
    if prefix.seq >= seq:
        return f"{earlier}; its link at seq {prefix.seq} checked now"
    return f"{earlier}; seq {prefix.seq + 1} to {seq} walked now"


@login_required
def documentation(request, name: str, version: str):
    """The pack's summary, its as-of form and the download links."""
    instance = _version(request.user, name, version)
    errors: dict[str, str] = {}
    try:
        as_of = int_param(request.GET, "as_of", minimum=1)
        cut = pack.cut_at(instance, as_of)
    except InvalidInput as exc:
        errors = {k: " ".join(v) if isinstance(v, list) else str(v) for k, v in exc.errors.items()}
        as_of, cut = None, pack.cut_at(instance, None)
    check = pack.verify(cut)
    body = pack.build(instance, cut, audit_visible=_audit_visible(request.user, name), check=check)
    context = {
        "version": instance,
        "model": instance.model,
        "document": body["document"],
        "verification": body["s8_changes"]["chain_verification"],
        "verified_how": _verified_how(check, cut.seq),
        "counts": _counts(body),
        "sections": [pack.SECTION_TITLES[k] for k in sorted(body) if k != "document"],
        "as_of": as_of,
        "as_of_raw": request.GET.get("as_of", ""),
        "seq": cut.seq,
        "formats": renderers.FORMATS,
        "errors": errors,
    }
    return render(request, "console/documentation.html", context, status=400 if errors else 200)


@login_required
def documentation_download(request, name: str, version: str):
    """The pack file in ``?format=`` (json by default) as of ``?as_of=`` (default: the head);
    a bad value is a 400 naming the parameter."""
    instance = _version(request.user, name, version)
    try:
        fmt = choice_param(request.GET, "format", renderers.FORMATS) or "json"
        cut = pack.cut_at(instance, int_param(request.GET, "as_of", minimum=1))
    except InvalidInput as exc:
        return HttpResponse(
            "; ".join(f"{k}: {v}" for k, v in exc.errors.items()),
            status=400,
            content_type="text/plain; charset=utf-8",
        )
    body = pack.build(instance, cut, audit_visible=_audit_visible(request.user, name))
    return pack_response(renderers.render(body, fmt), fmt, instance, cut.seq, download=True)
