"""Warm standby: the last versions that served stay cached on disk and verified loadable.

After each promotion or restore, ``warm_standby_refresh`` makes sure the artifacts of the
``WARM_STANDBY`` (3) most recently retired, warm versions are in the local artifact cache with the
registered digest and load as pyfunc models (loaded once and let go: only live and shadow versions
are held in memory). A restore then only has to load a verified local copy.
"""

from __future__ import annotations

import logging
import time

from governance.lifecycle import WARM_STANDBY
from governance.models import Archive, Lifecycle, Stage

from .loader import ArtifactError, load_verified
from .router import _version_ref

logger = logging.getLogger(__name__)


def warm_versions(model_id: int):
    return [
        row.version
        for row in Lifecycle.objects.filter(
            version__model_id=model_id, stage=Stage.RETIRED, archive=Archive.WARM
        )
        .select_related("version__model__artifact_policy")
        .order_by("-stage_entered_at", "-pk")[:WARM_STANDBY]
    ]


STANDBY_TASK = "serving.warm_standby"


def _still_standby(version) -> str | None:
    """Why ``version`` is no longer a warm standby (None: it still is)."""
    row = Lifecycle.objects.filter(version=version).values("stage", "archive").first()
    if row is None:
        return "the version no longer exists"
    if row["stage"] == Stage.RETIRED and row["archive"] == Archive.WARM:
        return None
    where = f"{row['stage']}, {row['archive']} archive" if row["archive"] else row["stage"]
    return f"{version.version} is no longer a warm standby (it is in {where})"


def warm_standby_refresh(*, model_id: int) -> list[dict]:
    """Premise, per version: it is still a warm standby (restored, archived cold or rolled back
    meanwhile, it is skipped with the reason; a load failure of a version that stopped being a
    standby while it loaded is a skip too, not an error). Only the disk cache changes: no audit.
    """
    from governance.premises import Premise

    report = []
    for version in warm_versions(model_id):
        premise = Premise(
            STANDBY_TASK,
            f"{version.version} of {version.model.name} is still a warm standby",
            model_id=model_id,
            model_name=version.model.name,
        )
        with premise.locked():
            reason = _still_standby(version)
        if reason is not None:
            report.append(premise.skip(reason, audited=False, version=version.version))
            continue
        ref = _version_ref(version)
        started = time.perf_counter()
        try:
            model = load_verified(ref.artifact)
        except ArtifactError as exc:
            with premise.locked():
                reason = _still_standby(version)
            if reason is not None:
                report.append(premise.skip(reason, audited=False, version=version.version))
                continue
            logger.error("warm standby %s is not deployable: %s", version, exc)
            report.append({"version": version.version, "ok": False, "error": str(exc)})
            continue
        report.append(
            {
                "version": version.version,
                "ok": True,
                "digest": version.artifact_digest,
                "path": str(model.path),
                "load_ms": round(model.load_seconds * 1000, 1),
                "total_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
    return report
