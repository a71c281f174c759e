"""``platform_core.tasking``: tasks are sent by name, after commit, on the queue settings give."""

from __future__ import annotations

import pytest
from django.db import transaction

from config.celery import app
from platform_core import tasking

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, tuple, dict, dict]]:
    calls: list[tuple[str, tuple, dict, dict]] = []

    def record(name, args=(), kwargs=None, **options):
        calls.append((name, tuple(args), kwargs or {}, options))
        return "id"

    monkeypatch.setattr(tasking, "send", record)
    return calls


def test_a_task_is_sent_only_when_its_transaction_commits(sent):
    with transaction.atomic():
        tasking.enqueue_on_commit("incidents.run_rollback", 7)
        assert sent == []  # not before the commit
    assert sent == [("incidents.run_rollback", (7,), {}, {"countdown": None})]


def test_a_rolled_back_transaction_sends_nothing(sent):
    with pytest.raises(RuntimeError), transaction.atomic():
        tasking.enqueue_on_commit("incidents.run_rollback", 7)
        raise RuntimeError("the request failed")
    assert sent == []


def test_send_runs_a_registered_task_by_name_with_the_apps_settings():
    """Through ``signature(name)``: eager mode (a setting) applies like for ``.delay``."""
    app.conf.task_always_eager = True
    try:
        assert tasking.enqueue("governance.escalate_overdue_stages") != ""
    finally:
        app.conf.task_always_eager = False


@pytest.mark.parametrize(
    ("name", "queue"),
    [
        ("incidents.run_rollback", "urgent"),
        ("incidents.run_playbook", "urgent"),
        ("incidents.deliver_notifications", "urgent"),
        ("serving.verify_promotion", "urgent"),
        ("serving.warm_standby", "urgent"),
        ("monitoring.execute_run", "monitoring"),
        ("governance.mirror_stage_to_mlflow", "default"),
    ],
)
def test_settings_route_each_task_name_to_its_queue(name, queue):
    assert app.amqp.router.route({}, name, (), {})["queue"].name == queue
