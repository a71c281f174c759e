"""The Celery app: ``celery -A config worker -Q urgent`` and ``celery -A config beat``."""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Rollback, halt and notifications have their own queue so they never wait behind monitoring.
app.conf.task_queues = (Queue("urgent"), Queue("monitoring"), Queue("default"))
app.autodiscover_tasks()
