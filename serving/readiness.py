"""What /readyz reports per model, and the check that a newly promoted version really serves."""

from __future__ import annotations

import logging

from governance import lifecycle
from governance.audit import Actor
from governance.models import Lifecycle, Stage

from . import cache, gateway, loader, router, shadow

logger = logging.getLogger(__name__)
ACTOR = Actor.system("serving gateway")


def serving_status(*, load: bool = True) -> dict:
    """Per model with a serving version: is it loaded in this process, with a verified digest.

    ``load`` builds the route (and so loads the model) where this process has none yet, which
    also warms a fresh worker. ``ok`` is false when some live version cannot serve.
    """
    from governance.models import SERVING_STAGES

    models: dict[str, dict] = {}
    rows = Lifecycle.objects.filter(stage__in=SERVING_STAGES).select_related("version__model")
    for row in rows.order_by("version__model__name"):
        version = row.version
        name = version.model.name
        route = router.route_for(name) if load else router.cached_route(name)
        entry = {
            "live_version": version.version,
            "stage": row.stage,
            "artifact_digest": version.artifact_digest,
            "loaded": False,
            "digest_verified": False,
            "error": None,
            "halted": False,
            "shadow_versions": [],
            "shadow_features": [],  # accepted beside the live features, for the shadow only
            "shadow_counts": shadow.counts(name),  # this process's instances per version
        }
        if route is not None and route.live is not None and route.live.id == version.pk:
            model = route.live_model
            entry["loaded"] = model is not None
            entry["digest_verified"] = model is not None and model.digest == version.artifact_digest
            entry["load_ms"] = round(model.load_seconds * 1000, 1) if model else None
            entry["error"] = str(route.live_error) if route.live_error else None
            entry["halted"] = route.halt is not None
            entry["shadow_versions"] = [ref.version for ref, _ in route.shadows]
            entry["shadow_features"] = list(route.shadow_features)
        elif loader.loaded(version.artifact_digest) is not None:
            entry["loaded"] = entry["digest_verified"] = True
        models[name] = entry
    ok = all(m["loaded"] and m["digest_verified"] for m in models.values())
    return {"ok": ok, "models": models}


class NotServing(RuntimeError):
    """The promoted version did not serve a real prediction (yet), and it is still live."""


VERIFY_TASK = "serving.verify_promotion"


def _unverified_live(version_id: int) -> str | None:
    """Why the premise of the verification fails (None: it holds). Call under the model lock."""
    from governance.lifecycle import live_lifecycle

    row = Lifecycle.objects.select_related("version__model").filter(version_id=version_id).first()
    if row is None:
        return "the version no longer exists"
    if row.stage == Stage.PRODUCTION:
        return None
    if row.stage == Stage.MONITORING:
        return f"{row.version.version} was verified already (it is in monitoring)"
    live = live_lifecycle(row.version.model)
    now = f"{live.version.version} serves now" if live else "no version serves now"
    return f"superseded: {row.version.version} is in {row.stage}, no longer the live version; {now}"


def verify_promotion(*, version_id: int) -> dict:
    """Score one instance through the normal path; if the version serves, begin monitoring.

    Premise: the version is the live version of its model, in production (the stage it was
    promoted to) and not yet verified. It is checked before the probe and again, under the
    model lock the rollback and promotions take, before acting on the probe: a probe answered
    by another version because a rollback or a newer promotion happened meanwhile is
    *superseded* (skipped, audited), never an outage, and nothing is retried.
    """
    from governance.premises import Premise

    row = Lifecycle.objects.select_related("version__model").filter(version_id=version_id).first()
    if row is None:  # a task outliving its database (a reset demo): nothing to verify, no retry
        return Premise(VERIFY_TASK, f"version {version_id} is live").skip(
            "no such version", audited=False, version_id=version_id
        )
    version = row.version
    premise = Premise(
        VERIFY_TASK,
        f"{version.version} is the live version of {version.model.name}, in production, "
        "not yet verified",
        model_id=version.model_id,
        model_name=version.model.name,
    )
    with premise.locked():
        reason = _unverified_live(version_id)
        if reason is not None:
            return premise.skip(reason, obj=row, version=version.version)
    probe = {"instances": [dict.fromkeys(version.feature_list or [], 0.0)]}
    try:
        code, body = gateway.serve(version.model.name, probe, record=False, ignore_halt=True)
    except Exception as exc:  # NotFound, InvalidInput, a broken model: not serving (yet)
        code, body = 0, {"detail": f"{type(exc).__name__}: {exc}"}
    answered = body.get("version")
    served = code == 200 and not body.get("stale") and answered == version.version
    with premise.locked():
        reason = _unverified_live(version_id)
        if reason is not None:
            return premise.skip(
                f"{reason} (the probe was answered by {answered or 'no version'}, HTTP {code})",
                obj=row,
                version=version.version,
                answered_by=answered,
            )
        if served:
            lifecycle.transition(
                version=version, name="begin_monitoring", actor=ACTOR, automatic=True
            )
    if not served:  # still the live version, and it does not serve: a real outage
        detail = f"{version} did not serve the probe: {code} "
        detail += str(body.get("detail") or answered)
        cache.report_outage(
            model=version.model.name, version=version.version, kind="not_verified", detail=detail
        )
        raise NotServing(detail)
    logger.info("%s verified serving; monitoring begins", version)
    return {"version": version.version, "verified": True, "score": body["predictions"][0]["score"]}
