"""Feature types declared per version: what ingestion checks and the store writes.

A version's ``feature_types`` map every feature of its ``feature_list`` to ``number``,
``integer``, ``string`` or ``boolean``. They come from the registration body, else from the
MLflow signature in the artifact's ``MLmodel`` file (plain YAML: nothing of the artifact is
executed), else every feature is a ``number``. Before, the first ingested batch fixed a
feature's type, so one stray string turned a numeric feature into text for good.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FEATURE_TYPES = ("number", "integer", "string", "boolean")
DEFAULT_TYPE = "number"

# MLflow schema types (mlflow.types.DataType) to ours.
_MLFLOW_TYPES = {
    "double": "number",
    "float": "number",
    "long": "integer",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
}


def declared_errors(feature_types: Any, feature_list: Sequence[str]) -> list[str]:
    """Why ``feature_types`` is not a valid declaration for ``feature_list`` (empty: it is)."""
    if not isinstance(feature_types, Mapping):
        return ['must be an object mapping each feature to its type, e.g. {"f1": "number"}']
    problems = []
    keys = [str(k) for k in feature_types]
    missing = [f for f in feature_list if f not in feature_types]
    unknown = sorted(set(keys) - set(feature_list))
    if missing:
        problems.append(f"missing features: {', '.join(missing)}")
    if unknown:
        problems.append(f"features not in feature_list: {', '.join(unknown)}")
    allowed = ", ".join(FEATURE_TYPES)
    for name, kind in feature_types.items():
        if kind not in FEATURE_TYPES:
            problems.append(f"{name}: {str(kind)[:40]!r} is not one of {allowed}")
    return problems


def from_signature(model_dir: Path | str | None, feature_list: Sequence[str]) -> dict[str, str]:
    """The types the artifact's MLflow signature gives the features ({} when it gives none).

    Reads ``MLmodel`` as YAML with the safe loader; any problem means "no signature".
    """
    if model_dir is None:
        return {}
    try:
        import yaml

        path = Path(model_dir) / "MLmodel"
        if not path.is_file() or path.stat().st_size > 1 << 20:
            return {}
        meta = yaml.safe_load(path.read_text(encoding="utf-8"))
        inputs = json.loads(((meta or {}).get("signature") or {}).get("inputs") or "[]")
        columns = {c.get("name"): c.get("type") for c in inputs if isinstance(c, dict)}
    except Exception:  # no signature, or one this code does not read: not an error
        logger.info("no readable MLflow signature in %s", model_dir, exc_info=True)
        return {}
    found = {f: _MLFLOW_TYPES.get(str(columns.get(f, "")).lower()) for f in feature_list}
    return {f: kind for f, kind in found.items() if kind is not None}


def resolve(
    declared: Mapping[str, str] | None, feature_list: Sequence[str], model_dir=None
) -> dict[str, str]:
    """Every feature's type: the declaration, else the signature, else ``number``."""
    if declared:
        return {f: str(declared[f]) for f in feature_list}
    signature = from_signature(model_dir, feature_list)
    return {f: signature.get(f, DEFAULT_TYPE) for f in feature_list}
