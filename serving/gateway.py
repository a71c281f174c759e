"""The predict service: route, halt check, validation, scoring, thresholds, logging, shadow.

The live version scores only its own features; features a staged version needs beyond them
(``route.shadow_features``) are validated, then handed to the shadow scoring alone.

``serve`` is the one code path of a prediction, used by the API and by the promotion check.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from registry.errors import InvalidInput, NotFound

from . import cache, log, router, shadow
from .conf import setting
from .loader import ArtifactError
from .validation import blame_instances, feature_matrices, feature_matrix, parse_body

# Per artifact digest, one row its model scored: the reference that tells a broken model from a
# request whose values the model cannot score.
_good_rows: dict[str, np.ndarray] = {}


def prediction_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs from one read of the OS's random source, as text.

    The same strings as ``str(uuid.UUID(bytes=..., version=4))``, without building n objects.
    """
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.tobytes().hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _client_fault(model, X: np.ndarray, features: tuple[str, ...]) -> dict[str, str] | None:
    """400 problems when the request's values made the scoring fail; None: the model's outage."""
    good_row = _good_rows.get(model.digest)
    if good_row is None or good_row.shape != (X.shape[1],):
        good_row = np.zeros(X.shape[1])
    return blame_instances(lambda rows: model.score(rows, features), X, features, good_row)


def halted_body(halt) -> dict:
    return {
        "halted": True,
        "scope": halt.scope,
        "reason": halt.reason,
        "engaged_at": halt.engaged_at,
        "detail": f"inference is halted ({'all models' if halt.scope == 'global' else halt.scope})"
        ": no prediction is served until an ML Lead and an Ethics Officer approve the release.",
    }


def serve(
    model_name: str,
    payload: Any,
    *,
    generations=None,
    record: bool = True,
    ignore_halt: bool = False,
) -> tuple[int, dict]:
    """(status, body) of one predict request. ``record=False``: not logged, cached or shadowed."""
    route = router.route_for(model_name, generations)
    if route.model_id is None:
        raise NotFound(f"no model named '{model_name}'")
    if route.halt is not None and not ignore_halt:
        return 503, halted_body(route.halt)
    if route.live is None:
        return 503, {"detail": f"no version of {model_name} is in a serving stage", "stale": False}
    instances, sensitive = parse_body(payload, max_instances=int(setting("SERVING_MAX_INSTANCES")))
    live = route.live
    model = route.live_model
    integer_features = live.integer_features
    if model is not None:
        integer_features = integer_features | model.integer_features
    boolean_features = live.boolean_features
    if route.shadow_features:  # a staged version needs features the live one does not
        X, shadow_X = feature_matrices(
            instances,
            live.features,
            live.feature_set,
            route.shadow_features,
            integer_features=integer_features,
            boolean_features=boolean_features,
        )
    else:
        X = feature_matrix(
            instances,
            live.features,
            live.feature_set,
            integer_features=integer_features,
            boolean_features=boolean_features,
        )
        shadow_X = None
    try:
        if model is None:
            raise route.live_error or ArtifactError("load_failed", "the model is not loaded")
        scores = model.score(X, live.features)
        if scores.shape != (len(X),) or not np.isfinite(scores).all():
            raise ValueError(f"the model returned {scores.shape} scores for {len(X)} instances")
    except Exception as exc:
        if model is not None and not isinstance(exc, ArtifactError):
            problems = _client_fault(model, X, live.features)
            if problems:
                raise InvalidInput(problems) from exc
        kind = exc.kind if isinstance(exc, ArtifactError) else "predict_failed"
        detail = exc.detail if isinstance(exc, ArtifactError) else f"{type(exc).__name__}: {exc}"
        if record:
            cache.report_outage(model=model_name, version=live.version, kind=kind, detail=detail)
        return cache.stale_answer(route, X, f"{live.version} {kind}: {detail}")
    if model.digest not in _good_rows:
        _good_rows[model.digest] = X[0].copy()
    predictions = (scores >= live.threshold).astype(np.int8)
    ids = prediction_ids(len(X))
    body = {
        "model": model_name,
        "version": live.version,
        "predictions": [
            {"prediction_id": i, "score": s, "prediction": p}
            for i, s, p in zip(ids, scores.tolist(), predictions.tolist(), strict=True)
        ],
        "stale": False,
    }
    if record:
        now = time.time()
        log.record(
            log.LoggedBatch(
                model_name=model_name,
                version=live.version,
                features=live.features,
                prediction_ids=ids,
                timestamp=now,
                X=X,
                scores=scores,
                predictions=predictions,
                sensitive=sensitive,
            )
        )
        cache.remember(
            model_name=model_name,
            version=live.version,
            features=live.features,
            prediction_ids=ids,
            X=X,
            scores=scores,
            predictions=predictions,
        )
        shadow.submit(route, X, ids, now, sensitive, shadow_X)
    return 200, body
