"""Reference profiles: what a daily run needs from a version's reference data, computed once.

``profile_for`` runs ``stats.build_reference_profile`` over the version's stored reference records
(its ``feature_list``, scores, and labels when every reference record has one).
``reference_ingest`` stores the result on every new reference batch, so the profile always covers
all of the version's reference data; checks read it back with ``stored_profile``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from django.utils import timezone

from analytics import stats
from platform_core.errors import Conflict
from registry.models import ModelVersion

from . import store
from .models import DataBatch, ReferenceProfile


def feature_values(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, bool]:
    """A feature column as ``stats`` wants it, and whether it is categorical.

    Numeric: float64 with NaN for missing. Categorical (stored as strings): an object array of
    ``str`` with ``None`` for missing (``stats`` bins categories by ``str()``, so missing values
    form their own ``"None"`` category). Use the same conversion on current windows.
    """
    column = frame[store.feature_column(name)]
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), False
    values = column.to_numpy(dtype=object, na_value=None)
    return values, True


def labels_of(frame: pd.DataFrame) -> np.ndarray | None:
    """The ``label`` column as int8 when every row has one, else ``None``."""
    if "label" not in frame.columns or not len(frame):
        return None
    labels = frame["label"].to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isnan(labels).any():
        return None
    return labels.astype(np.int8)


def profile_for(version: ModelVersion, *, frame: pd.DataFrame | None = None) -> dict[str, Any]:
    """The reference profile of ``version`` over all its stored reference data.

    Raises ``Conflict`` when the version has no reference data yet.
    """
    if frame is None:
        frame = store.load_reference(version)
    if not len(frame):
        raise Conflict(f"{version} has no reference data; upload it first")
    features: dict[str, np.ndarray] = {}
    categorical: list[str] = []
    for name in version.feature_list:
        values, is_categorical = feature_values(frame, name)
        features[name] = values
        if is_categorical:
            categorical.append(name)
    return dict(
        stats.build_reference_profile(
            features,
            frame["score"].to_numpy(dtype=np.float64),
            labels_of(frame),
            categorical_features=categorical,
        )
    )


def store_profile(version: ModelVersion, *, batch: DataBatch | None = None) -> ReferenceProfile:
    """Compute and save the version's profile (replacing an older one); inside a transaction."""
    profile = profile_for(version)
    row, _ = ReferenceProfile.objects.update_or_create(
        version=version,
        defaults={
            "profile": profile,
            "rows": profile["n"],
            "batch": batch,
            "created_at": timezone.now(),
        },
    )
    return row


def stored_profile(version: ModelVersion) -> dict[str, Any] | None:
    """The stored profile dict of ``version``, or ``None`` when no reference data arrived."""
    return (
        ReferenceProfile.objects.filter(version=version).values_list("profile", flat=True).first()
    )


def summary(profile: dict[str, Any]) -> dict[str, Any]:
    """What the API answers about a profile: sizes and bins, not the numbers themselves."""
    labels = profile.get("labels")
    return {
        "rows": profile["n"],
        "bins": profile["bins"],
        "features": [
            {
                "name": name,
                "kind": feature["kind"],
                "bins": len(feature["counts"]),
                "missing": feature.get("missing", 0),
            }
            for name, feature in profile["features"].items()
        ],
        "score_mean": profile["scores"]["mean"],
        "labels": None
        if labels is None
        else {"rows": labels["n"], "positive_rate": labels["positive_rate"]},
    }
