"""Project wiring: settings, URLs, the Celery app (``celery -A config``)."""

from .celery import app as celery_app

__all__ = ["celery_app"]
