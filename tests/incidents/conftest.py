import pytest


@pytest.fixture(autouse=True)
def enqueued(monkeypatch):
    """Record task enqueues instead of sending them to a broker; tests call services directly."""
    calls: dict[str, list] = {"rollback": [], "delivery": [], "playbook": []}
    monkeypatch.setattr(
        "incidents.rollback.enqueue_rollback", lambda pk: calls["rollback"].append(pk)
    )
    monkeypatch.setattr(
        "incidents.notifications.enqueue_delivery",
        lambda countdown=None: calls["delivery"].append(countdown),
    )
    monkeypatch.setattr(
        "incidents.playbooks.enqueue_playbook", lambda pk: calls["playbook"].append(pk)
    )
    return calls
