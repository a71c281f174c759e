"""Which version serves each model, cached per process and checked against the routing generation.

``route_for(name, generations)`` is called on every request with the generations just read (one
database or Redis round trip for the model, ``global`` and ``__grants__``). While they equal the
ones the cached route was built at, the route is used as it is: no query. When they moved, the
route is rebuilt under a per-model lock: the serving and staging versions, the warm-standby
versions and the halts in force are read, and the live model is loaded (verified) *before* the
new route replaces the old one. Requests that arrive meanwhile wait for it, so once a generation
is seen no response comes from the version it replaced, and none fails for the swap. A staging
(shadow) version not yet in memory is loaded in the background and joins the route when ready:
live requests never wait for a shadow.

``shadow_features`` are the features other versions of the model use and the live one does not:
those a staging version needs (a MAJOR feature-set change) are scored by it, loaded yet or not;
those of earlier versions (one just rolled back, a MAJOR whose shadow failed) are accepted and
ignored, so a rollback never turns the requests of clients that moved on into 400s. Usually
empty, and then validation costs nothing more than without a shadow.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Q

from . import background, generation, loader, shadow_counts
from .conf import GLOBAL, GRANTS, setting
from .loader import ArtifactError, ArtifactRef, LoadedModel
from .predicate import Where, where_normalize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRef:
    id: int
    version: str
    threshold: float
    features: tuple[str, ...]
    feature_set: frozenset[str]
    artifact: ArtifactRef
    staged_at: int = 0  # a staging version's stay (``shadow_counts.stay_key``); 0 for the others
    # declared ``feature_types``: the gateway refuses what monitoring ingestion would refuse
    integer_features: frozenset[str] = frozenset()
    boolean_features: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HaltRef:
    scope: str
    reason: str
    engaged_at: str
    id: int | None = None
    where: Where | None = None  # a scoped halt's predicate; None: every request


@dataclass(frozen=True)
class Route:
    model_name: str
    model_id: int | None
    generation: tuple[int, ...] | None
    built_at: float
    live: VersionRef | None = None
    live_model: LoadedModel | None = None
    live_error: ArtifactError | None = None
    shadows: tuple[tuple[VersionRef, LoadedModel], ...] = ()
    halt: HaltRef | None = None
    scoped_halts: tuple[HaltRef, ...] = ()  # refuse the requests their predicates match
    stale_versions: frozenset[str] = frozenset()  # whose cached predictions may be served
    shadow_features: tuple[str, ...] = ()  # accepted for the staging versions, not the live one


class Routes:
    """One gateway's routes per model name, and a build lock per name."""

    def __init__(self, routes: dict[str, Route] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.locks: dict[str, threading.Lock] = {}
        self.locks_lock = threading.Lock()

    def lock_for(self, name: str) -> threading.Lock:
        with self.locks_lock:
            return self.locks.setdefault(name, threading.Lock())


def _state() -> Routes:
    from .process import current

    return current().routes


def generation_keys(model_name: str) -> tuple[str, str, str]:
    return (model_name, GLOBAL, GRANTS)


def read_generations(model_name: str) -> tuple[int, ...] | None:
    return generation.read(generation_keys(model_name))


def _max_age() -> float | None:
    configured = setting("SERVING_ROUTE_MAX_AGE")
    if configured is not None:
        return float(configured) or None
    return 5.0 if generation.backend().name == "redis" else None


def _current(route: Route | None, gens: Sequence[int] | None) -> bool:
    if route is None or gens is None or route.generation != tuple(gens[:2]):
        return False
    max_age = _max_age()
    return max_age is None or time.monotonic() - route.built_at < max_age


def route_for(model_name: str, generations: Sequence[int] | None = None) -> Route:
    """The route of ``model_name`` as of ``generations`` (read now when not given)."""
    gens = read_generations(model_name) if generations is None else generations
    state = _state()
    route = state.routes.get(model_name)
    if _current(route, gens):
        if route.live is not None and route.live_model is None:
            return _retry_live(route)
        return route
    with state.lock_for(model_name):
        route = state.routes.get(model_name)
        if _current(route, gens):
            return route
        # Read again under the lock: another thread may have rebuilt it for a newer generation.
        gens = read_generations(model_name)
        if _current(route, gens):
            return route
        route = _build(model_name, None if gens is None else tuple(gens[:2]))
        if route.model_id is not None:
            state.routes[model_name] = route
            _retain()
        return route


def _retry_live(route: Route) -> Route:
    """The live model failed to load: try again when due, without making requests wait."""
    if not loader.retry_due(route.live.artifact.digest):
        return route
    lock = _state().lock_for(route.model_name)
    if not lock.acquire(blocking=False):
        return route
    try:
        current = _state().routes.get(route.model_name, route)
        if current.live_model is not None or current.live is None:
            return current
        try:
            model = loader.load(current.live.artifact)
        except ArtifactError as exc:
            fresh = dataclasses.replace(current, live_error=exc)
        else:
            fresh = dataclasses.replace(current, live_model=model, live_error=None)
            logger.info("%s %s loads again", route.model_name, current.live.version)
        _state().routes[route.model_name] = fresh
        return fresh
    finally:
        lock.release()


def _version_ref(version, staged_at: int = 0) -> VersionRef:
    """The version as the gateway serves it; the stage it was read with goes to the loader.

    Callers pass versions just read with their lifecycle (``select_related``), never ones held
    from before a transition.
    """
    features = tuple(version.feature_list or ())
    lifecycle = getattr(version, "lifecycle", None)  # read with the version (select_related)
    policy = getattr(version.model, "artifact_policy", None)  # None: the defaults
    threshold = (version.thresholds or {}).get("decision", 0.5)
    declared = getattr(version, "feature_types", None) or {}
    return VersionRef(
        id=version.pk,
        version=version.version,
        threshold=float(threshold),
        features=features,
        feature_set=frozenset(features),
        artifact=ArtifactRef(
            digest=version.artifact_digest,
            mlflow_name=version.mlflow_name,
            mlflow_version=str(version.mlflow_version),
            features=features,
            label=f"{version.model.name} {version.version}",
            stage=lifecycle.stage if lifecycle is not None else None,
            # the model's artifact policy as it is now (a change bumps the routing generation)
            allow_executable=policy.allow_executable if policy is not None else True,
        ),
        staged_at=staged_at,
        integer_features=frozenset(f for f in features if declared.get(f) == "integer"),
        boolean_features=frozenset(f for f in features if declared.get(f) == "boolean"),
    )


def _halts_in_force(model_name: str) -> tuple[HaltRef | None, list[HaltRef]]:
    """The unreleased halt that stops every request of the model (the global one first), and
    the scoped halts (a predicate over request fields) in force on it, oldest first."""
    from .models import Halt

    halts, scoped = {}, []
    for h in Halt.objects.filter(scope__in=[model_name, GLOBAL], released_at__isnull=True).order_by(
        "engaged_at", "pk"
    ):
        if h.where_key:
            scoped.append(
                HaltRef(h.scope, h.reason, h.engaged_at.isoformat(), h.pk, where_normalize(h.where))
            )
        else:
            halts[h.scope] = h
    halt = halts.get(GLOBAL) or halts.get(model_name)
    return (HaltRef(halt.scope, halt.reason, halt.engaged_at.isoformat()) if halt else None), scoped


def _load_live(model_name: str, live: VersionRef | None):
    """The live version's model, loaded (verified) now, or the error that keeps it from serving."""
    if live is None:
        return None, None
    try:
        return loader.load(live.artifact), None
    except ArtifactError as exc:
        logger.error("%s %s cannot serve: %s", model_name, live.version, exc)
        return None, exc


def _staging(rows, live: VersionRef | None, shadow_features: dict[str, None]):
    """The staging versions already in memory (ref, model) and those still to load; the features
    they need beyond the live version's join ``shadow_features``."""
    from governance.models import Stage

    shadows, pending = [], []
    for row in rows:
        if row.stage != Stage.STAGING:
            continue
        ref = _version_ref(row.version, shadow_counts.stay_key(row.stage_entered_at))
        if live is not None:
            shadow_features.update(
                dict.fromkeys(f for f in ref.features if f not in live.feature_set)
            )
        model = loader.loaded(ref.artifact.digest)
        if model is not None:
            shadows.append((ref, model))
        else:
            pending.append(ref)  # loaded in the background: live requests never wait for it
    return shadows, pending


def _other_versions_features(model_id: int, live: VersionRef, shadow_features: dict[str, None]):
    """Features of the model's other versions (the one just rolled back, a MAJOR whose shadow
    failed, warm standby...) are accepted and ignored: clients that moved to a version's
    features must not get 400s the moment that version stops serving. Only versions callers can
    have been sent to count: staged (shadowed) at some point, or served; a version still in
    development never widens what a request may carry."""
    from governance.models import SERVING_STAGES, Stage
    from registry.models import ModelVersion

    served = [*SERVING_STAGES, Stage.STAGING, Stage.ROLLBACK, Stage.RETIRED]
    for features in (
        ModelVersion.objects.filter(model_id=model_id)
        .filter(Q(lifecycle__shadow_baseline__isnull=False) | Q(lifecycle__stage__in=served))
        .values_list("feature_list", flat=True)
    ):
        shadow_features.update(
            dict.fromkeys(f for f in features or () if f not in live.feature_set)
        )


def _build(model_name: str, gens: tuple[int, ...] | None) -> Route:
    from governance.models import SERVING_STAGES, Archive, Lifecycle, Stage
    from registry.models import RegisteredModel

    built_at = time.monotonic()
    model_id = RegisteredModel.objects.filter(name=model_name).values_list("pk", flat=True).first()
    if model_id is None:
        return Route(model_name=model_name, model_id=None, generation=gens, built_at=built_at)
    rows = list(
        Lifecycle.objects.filter(version__model_id=model_id)
        .filter(
            Q(stage__in=[*SERVING_STAGES, Stage.STAGING])
            | Q(stage=Stage.RETIRED, archive=Archive.WARM)
        )
        .select_related("version__model__artifact_policy")
        .order_by("-stage_entered_at", "-pk")
    )
    halt, scoped = _halts_in_force(model_name)
    live_rows = [r for r in rows if r.stage in SERVING_STAGES]
    live = _version_ref(live_rows[0].version) if live_rows else None
    live_model, live_error = _load_live(model_name, live)
    shadow_features: dict[str, None] = {}
    shadows, pending = _staging(rows, live, shadow_features)
    if live is not None:
        _other_versions_features(model_id, live, shadow_features)
    stale_versions = frozenset(
        r.version.version for r in rows if r.stage in SERVING_STAGES or r.stage == Stage.RETIRED
    )
    route = Route(
        model_name=model_name,
        model_id=model_id,
        generation=gens,
        built_at=built_at,
        live=live,
        live_model=live_model,
        live_error=live_error,
        shadows=tuple(shadows),
        halt=halt,
        scoped_halts=tuple(scoped),
        stale_versions=stale_versions,
        shadow_features=tuple(shadow_features),
    )
    if pending:
        background.call_soon(_load_shadows, route, pending)
    return route


def _load_shadows(route: Route, refs: list[VersionRef]) -> None:
    """Load staging versions, then add them to the route if it is still the current one."""
    loaded = []
    for ref in refs:
        try:
            loaded.append((ref, loader.load(ref.artifact)))
        except ArtifactError as exc:
            logger.warning("no shadow scoring for %s %s: %s", route.model_name, ref.version, exc)
    if not loaded:
        return
    with _state().lock_for(route.model_name):
        current = _state().routes.get(route.model_name)
        if current is not None and current.built_at == route.built_at:
            _state().routes[route.model_name] = dataclasses.replace(
                current, shadows=current.shadows + tuple(loaded)
            )


def _retain() -> None:
    keep = set()
    for route in list(_state().routes.values()):
        if route.live_model is not None:
            keep.add(route.live_model.digest)
        keep.update(model.digest for _, model in route.shadows)
    loader.retain(keep)


def cached_route(model_name: str) -> Route | None:
    return _state().routes.get(model_name)


def clear() -> None:
    """Forget every route (tests; a process that wants to start cold)."""
    from .process import current

    current().routes = Routes()
