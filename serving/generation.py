"""Routing generations: one cheap read per request tells a gateway whether its routes are current.

Each model name (plus ``global`` for the global halt and ``__grants__`` for role grants and
tokens) has a counter. Whatever changes what a gateway should do (a transition, a halt, a grant)
bumps it; a gateway whose cached route was built at another value reloads it.

Two backends:

- **database** (the embedded default): a ``RoutingGeneration`` row, bumped *inside* the
  transaction that makes the change, so the new value and the new state become visible in the
  same commit: a reader cannot see one without the other.
- **redis** (when ``CELERY_BROKER_URL`` is a redis:// URL): ``INCR serving:generation:<name>``,
  run after commit (a bump before commit could make a reader reload the old state and keep it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from .conf import setting

logger = logging.getLogger(__name__)
REDIS_PREFIX = "serving:generation:"


class DatabaseGenerations:
    name = "database"

    def read(self, names: Sequence[str]) -> tuple[int, ...] | None:
        from .models import RoutingGeneration

        table = connection.ops.quote_name(RoutingGeneration._meta.db_table)
        marks = ", ".join(["%s"] * len(names))
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT model_name, generation FROM {table} WHERE model_name IN ({marks})",
                list(names),
            )
            found = dict(cursor.fetchall())
        return tuple(found.get(n, 0) for n in names)

    def bump(self, name: str) -> None:
        """Bump in the current transaction (or at once, outside one)."""
        from .models import RoutingGeneration

        with transaction.atomic():
            rows = RoutingGeneration.objects.filter(model_name=name)
            if rows.update(generation=F("generation") + 1):
                return
            try:
                with transaction.atomic():
                    RoutingGeneration.objects.create(model_name=name, generation=1)
            except IntegrityError:  # created concurrently: bump theirs
                rows.update(generation=F("generation") + 1)


class RedisGenerations:
    name = "redis"

    def __init__(self, url: str):
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        self._warned = 0.0

    def read(self, names: Sequence[str]) -> tuple[int, ...] | None:
        try:
            values = self.client.mget([REDIS_PREFIX + n for n in names])
        except Exception as exc:  # Redis down: the caller reloads from the database every time
            now = time.monotonic()
            if now - self._warned > 30:
                self._warned = now
                logger.warning("routing generation unreadable from Redis (%s); reloading", exc)
            return None
        return tuple(int(v) if v is not None else 0 for v in values)

    def bump(self, name: str) -> None:
        """INCR after the current transaction commits (at once outside one)."""
        transaction.on_commit(lambda: self._incr(name), robust=True)

    def _incr(self, name: str) -> None:
        for attempt in range(3):
            try:
                self.client.incr(REDIS_PREFIX + name)
                return
            except Exception as exc:
                if attempt == 2:
                    # Routes also expire after SERVING_ROUTE_MAX_AGE, so gateways still converge.
                    logger.error("could not bump the routing generation of %s: %s", name, exc)
                time.sleep(0.05 * (attempt + 1))


def backend() -> DatabaseGenerations | RedisGenerations:
    """The gateway's generation backend (made on first use, from the settings)."""
    from .process import current

    gateway = current()
    if gateway.generations is None:
        with gateway.lock:
            if gateway.generations is None:
                gateway.generations = _make()
    return gateway.generations


def _make() -> DatabaseGenerations | RedisGenerations:
    choice = setting("SERVING_GENERATION_BACKEND")
    url = setting("SERVING_REDIS_URL") or getattr(settings, "CELERY_BROKER_URL", "") or ""
    if choice == "redis" or (choice == "auto" and url.startswith(("redis://", "rediss://"))):
        return RedisGenerations(url)
    return DatabaseGenerations()


def reset() -> None:
    """Forget the backend (tests that change settings)."""
    from .process import current

    current().generations = None


def read(names: Sequence[str]) -> tuple[int, ...] | None:
    return backend().read(names)


def bump(*names: str) -> None:
    for name in dict.fromkeys(names):
        backend().bump(name)
