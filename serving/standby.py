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
        .select_related("version__model")
        .order_by("-stage_entered_at", "-pk")[:WARM_STANDBY]
    ]


def warm_standby_refresh(*, model_id: int) -> list[dict]:
    report = []
    for version in warm_versions(model_id):
        ref = _version_ref(version)
        started = time.perf_counter()
        try:
            model = load_verified(ref.artifact)
        except ArtifactError as exc:
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
