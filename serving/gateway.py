"""The gateway of this process, and the predict service.

``Gateway`` owns everything the gateway keeps in memory: routes, loaded models, the stale-answer
cache, the prediction log buffer, token and PREDICT decisions, the shadow queue and counts, the
background threads and the generation backend; and it is given its collaborators (the
monitoring ingestion the spool goes to, how that ingestion is enqueued, the clock). ``current()``
is this process's one: a forked worker (gunicorn) gets a fresh one at its first call, keeping
only the loaded models (the one PID check). ``reset()`` stops it and starts a new one (tests).

``serve`` is the one code path of a prediction, used by the API and by the promotion check: route,
halt check, scoped-halt check, validation, scoring, thresholds, logging, shadow. The live version
scores only its own features; features a staged version needs beyond them
(``route.shadow_features``) are validated, then handed to the shadow scoring alone. A scoped halt
(``route.scoped_halts``) refuses a request its predicate matches, before validation.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from platform_core.errors import InvalidInput, NotFound

from . import access, background, cache, loader, log, process, router, shadow, shadow_counts
from .conf import setting
from .loader import ArtifactError
from .validation import blame_instances, feature_matrices, feature_matrix, parse_body


def _monitoring_ingest(**kwargs) -> None:
    from monitoring.ingest import predictions_ingest  # monitoring is above serving

    predictions_ingest(**kwargs)


def _enqueue_ingest() -> None:
    log.enqueue_ingest()


def _now() -> float:
    return time.time()


class Gateway:
    """The gateway's state in one process, and the collaborators it hands work to."""

    def __init__(
        self,
        *,
        ingest: Callable[..., object] = _monitoring_ingest,
        enqueue_ingest: Callable[[], object] = _enqueue_ingest,
        clock: Callable[[], float] = _now,
        models: loader.Models | None = None,
    ) -> None:
        self.pid = os.getpid()
        self.ingest = ingest  # monitoring.ingest.predictions_ingest's signature
        self.enqueue_ingest = enqueue_ingest  # tells a worker the spool has files
        self.clock = clock  # epoch seconds of served predictions
        self.lock = threading.Lock()
        self.generations = None  # generation.backend() makes it from the settings
        self.models = models or loader.Models()
        self.routes = router.Routes()
        self.answers = cache.AnswerCache()
        self.log = log.PredictionLog()
        self.access = access.Decisions()
        self.shadow = shadow.ShadowQueue()
        self.counts = shadow_counts.Counts()
        self.background = background.Background((log.flush, cache.flush, shadow_counts.flush))
        # Per artifact digest, one row its model scored: the reference that tells a broken
        # model from a request whose values the model cannot score.
        self.good_rows: dict[str, np.ndarray] = {}

    def forked(self) -> Gateway:
        """A forked worker's gateway: no threads, buffers or caches of the parent, its models."""
        return Gateway(
            ingest=self.ingest,
            enqueue_ingest=self.enqueue_ingest,
            clock=self.clock,
            models=self.models.forked(),
        )

    def stop(self) -> None:
        """Finish what is queued (shadow scoring, hooks), then end the threads."""
        self.shadow.stop()
        self.background.stop()


# One gateway per process, kept by ``serving.process`` so that the parts composed above can reach
# it without importing this module; ``current`` and ``reset`` are re-exported for callers.
process.register(Gateway)
current = process.current
reset = process.reset
atexit.register(process.flush_at_exit)


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
    good_row = current().good_rows.get(model.digest)
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


def scoped_halted_body(halt, matching: list[int], unevaluable: list[int]) -> dict:
    """The 503 of a request a scoped halt refuses: the whole request, naming the instances.

    A batch is refused whole when any instance matches (or cannot be evaluated): serving the
    others would answer part of a request the client may not split, and a retry of the rest is
    the client's decision. ``matched`` and ``unevaluable`` list the instance indexes.
    """
    where = halt.where
    shown = (
        f"instances {', '.join(map(str, matching[:20]))}{' ...' if len(matching) > 20 else ''} "
        f"match {where.text}"
        if matching
        else ""
    )
    if unevaluable:
        shown += ("; " if shown else "") + (
            f"{where.field} cannot be evaluated on instances "
            f"{', '.join(map(str, unevaluable[:20]))}{' ...' if len(unevaluable) > 20 else ''} "
            "(missing or of the wrong type), so they are refused too"
        )
    return {
        "halted": True,
        "scope": halt.scope,
        "halt": halt.id,
        "where": where.to_dict(),
        "where_text": where.text,
        "reason": halt.reason,
        "engaged_at": halt.engaged_at,
        "matched": matching,
        "unevaluable": unevaluable,
        "detail": f"inference of {halt.scope} is halted where {where.text}: {shown}. Requests "
        "that do not match are served; the halt is released when an ML Lead and an Ethics "
        "Officer approve.",
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
    if route.scoped_halts and not ignore_halt:
        for halt in route.scoped_halts:  # before validation: refused, never served by mistake
            matching, unevaluable = halt.where.evaluate(instances, sensitive)
            if matching or unevaluable:
                return 503, scoped_halted_body(halt, matching, unevaluable)
    X, shadow_X = _matrices(route, instances)
    live, model = route.live, route.live_model
    try:
        scores = _score(route, X)
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
    gateway = current()
    if model.digest not in gateway.good_rows:
        gateway.good_rows[model.digest] = X[0].copy()
    predictions = (scores >= live.threshold).astype(np.int8)
    ids = prediction_ids(len(X))
    if record:
        _record(route, model_name, X, shadow_X, ids, scores, predictions, sensitive)
    return 200, _answer(model_name, live.version, ids, scores, predictions)


def _matrices(route, instances: list) -> tuple[np.ndarray, np.ndarray | None]:
    """The live version's feature matrix, and the shadow's extra features when it needs any."""
    live, model = route.live, route.live_model
    integer_features = live.integer_features
    if model is not None:
        integer_features = integer_features | model.integer_features
    types = {"integer_features": integer_features, "boolean_features": live.boolean_features}
    if route.shadow_features:  # a staged version needs features the live one does not
        return feature_matrices(
            instances, live.features, live.feature_set, route.shadow_features, **types
        )
    return feature_matrix(instances, live.features, live.feature_set, **types), None


def _score(route, X: np.ndarray) -> np.ndarray:
    """The live model's scores of ``X``; raises when it cannot serve or answers nonsense."""
    model = route.live_model
    if model is None:
        raise route.live_error or ArtifactError("load_failed", "the model is not loaded")
    scores = model.score(X, route.live.features)
    if scores.shape != (len(X),) or not np.isfinite(scores).all():
        raise ValueError(f"the model returned {scores.shape} scores for {len(X)} instances")
    return scores


def _answer(model_name: str, version: str, ids: list[str], scores, predictions) -> dict:
    return {
        "model": model_name,
        "version": version,
        "predictions": [
            {"prediction_id": i, "score": s, "prediction": p}
            for i, s, p in zip(ids, scores.tolist(), predictions.tolist(), strict=True)
        ],
        "stale": False,
    }


def _record(route, model_name, X, shadow_X, ids, scores, predictions, sensitive) -> None:
    """The served batch to the prediction log and the stale-answer cache; the shadow's turn."""
    now = current().clock()
    served = log.LoggedBatch(
        model_name=model_name,
        version=route.live.version,
        features=route.live.features,
        prediction_ids=ids,
        timestamp=now,
        X=X,
        scores=scores,
        predictions=predictions,
        sensitive=sensitive,
    )
    log.record(served)
    cache.remember(served)
    shadow.submit(route, X, ids, now, sensitive, shadow_X)
