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
    """The promoted version did not serve a real prediction (yet)."""


def verify_promotion(*, version_id: int) -> dict:
    """Score one instance through the normal path; if the version serves, begin monitoring.

    A no-op when the version is no longer in production (already verified, or replaced).
    """
    row = Lifecycle.objects.select_related("version__model").filter(version_id=version_id).first()
    if row is None:  # a task outliving its database (a reset demo): nothing to verify, no retry
        return {"version_id": version_id, "skipped": "no such version"}
    version = row.version
    if row.stage != Stage.PRODUCTION:
        return {"version": version.version, "skipped": f"in stage {row.stage}"}
    probe = {"instances": [dict.fromkeys(version.feature_list or [], 0.0)]}
    code, body = gateway.serve(version.model.name, probe, record=False, ignore_halt=True)
    if code != 200 or body.get("stale") or body.get("version") != version.version:
        detail = f"{version} did not serve the probe: {code} "
        detail += str(body.get("detail") or body.get("version"))
        cache.report_outage(
            model=version.model.name, version=version.version, kind="not_verified", detail=detail
        )
        raise NotServing(detail)
    lifecycle.transition(version=version, name="begin_monitoring", actor=ACTOR, automatic=True)
    logger.info("%s verified serving; monitoring begins", version)
    return {"version": version.version, "verified": True, "score": body["predictions"][0]["score"]}
