import pytest

# What the recording stand-in files each task under (the rest under its own name).
RECORDED_AS = {
    "incidents.run_rollback": "rollback",
    "incidents.deliver_notifications": "delivery",
    "incidents.run_playbook": "playbook",
}


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Record task enqueues instead of sending them to a broker; tests call services directly.

    Every enqueue goes through ``platform_core.tasking.send`` by task name: rollbacks and
    playbooks are recorded by id, deliveries by countdown, anything else as (args, kwargs).
    """
    calls: dict[str, list] = {"rollback": [], "delivery": [], "playbook": []}

    def record(name, args=(), kwargs=None, **options):
        key = RECORDED_AS.get(name, name)
        if key == "delivery":
            calls[key].append(options.get("countdown"))
        elif key in ("rollback", "playbook"):
            calls[key].append(args[0])
        else:
            calls.setdefault(key, []).append((args, kwargs or {}))
        return ""

    monkeypatch.setattr("platform_core.tasking.send", record)
    return calls


@pytest.fixture
def gateway(settings):
    """A cold gateway (as tests/serving's conftest gives): no routes, models or buffers."""
    from serving import access, background, cache, generation, loader, log, router, shadow

    def reset() -> None:
        shadow.drain()
        background.drain()
        router.clear()
        loader.clear()
        cache.clear()
        log.clear()
        access.clear()
        generation.reset()

    settings.SERVING_LOG_FLUSH_SECONDS = 0
    reset()
    yield
    reset()


@pytest.fixture
def serving_pair(mlflow_models):
    """(v1 in warm standby, v2 live), both real MLflow models the gateway (this process's or
    a worker's: the artifact cache is shared) can load."""
    from serving import loader, router
    from tests.serving.helpers import live, promote_patch

    router.clear()
    loader.clear()
    v1 = live(mlflow_models, "1.0.0", seed=0)
    v2 = promote_patch(mlflow_models, v1.model, "1.0.1", seed=1)
    yield v1, v2
    router.clear()
    loader.clear()
