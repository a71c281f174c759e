"""Routing generations: a change and its bump become visible together, never the bump first."""

import pytest
from django.db import transaction

from serving import generation, router

pytestmark = pytest.mark.django_db


@pytest.fixture
def database_backend(settings):
    settings.SERVING_GENERATION_BACKEND = "database"
    generation.reset()
    yield generation.backend()
    generation.reset()


@pytest.fixture
def redis_backend(settings):
    settings.SERVING_GENERATION_BACKEND = "redis"
    settings.SERVING_REDIS_URL = "redis://127.0.0.1:6379/15"
    generation.reset()
    backend = generation.backend()
    try:
        backend.client.ping()
    except Exception:
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    yield backend
    generation.reset()


def test_the_database_backend_bumps_within_the_changing_transaction(database_backend):
    before = generation.read(["gen-model"])
    with transaction.atomic():
        generation.bump("gen-model")
        inside = generation.read(["gen-model"])
    assert inside[0] == before[0] + 1  # same connection: it commits with the change


def test_the_redis_backend_bumps_only_after_commit(redis_backend, committed):
    before = generation.read(["gen-model"])
    with committed(), transaction.atomic():
        generation.bump("gen-model")
        assert generation.read(["gen-model"]) == before
    assert generation.read(["gen-model"])[0] == before[0] + 1


def test_a_rolled_back_change_never_bumps_redis(redis_backend, committed):
    before = generation.read(["gen-model-2"])
    with committed(), pytest.raises(RuntimeError), transaction.atomic():
        generation.bump("gen-model-2")
        raise RuntimeError
    assert generation.read(["gen-model-2"]) == before


def test_an_unreadable_redis_rebuilds_the_route_every_time(settings, db):
    settings.SERVING_GENERATION_BACKEND = "redis"
    settings.SERVING_REDIS_URL = "redis://127.0.0.1:9/0"
    generation.reset()
    try:
        assert generation.read(["m"]) is None
        assert router._current(router.Route("m", 1, None, 0.0), None) is False
    finally:
        generation.reset()


def test_redis_routes_expire_as_a_safety_net(settings):
    settings.SERVING_ROUTE_MAX_AGE = 0.001
    route = router.Route("m", 1, (1, 1), 0.0)
    assert router._current(route, (1, 1, 0)) is False
    settings.SERVING_ROUTE_MAX_AGE = None
    generation.reset()
    if generation.backend().name == "database":
        assert router._current(route, (1, 1, 0)) is True
