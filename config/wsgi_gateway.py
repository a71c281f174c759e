"""WSGI entry point of the gateway service: Django's application behind the predict fast path.

``serving.fast_path.PredictFastPath`` answers the predict requests of callers the gateway has
already authorised exactly as Django and DRF would, without their stack; everything else is
Django's (``gunicorn config.wsgi_gateway:application``).
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.gateway")
django_application = get_wsgi_application()

from serving.fast_path import PredictFastPath  # noqa: E402  (needs the settings above)

application = PredictFastPath(django_application)
