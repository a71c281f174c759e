"""Production settings of the gateway service: prod, without the admin, sessions or console.

Run by the ``gateway`` service of docker-compose.yml (its own gunicorn on port 8001). It serves
only ``config.urls_gateway`` and authenticates by API token only.

It signs nothing (no sessions, messages or password resets), so it does not need the console's
``DJANGO_SECRET_KEY`` and the compose file does not give it one: code in a served model must
not hold the key that signs staff sessions. Without ``DJANGO_SECRET_KEY`` each process makes a
random key of its own.
"""

import os
import secrets

if not os.environ.get("DJANGO_SECRET_KEY"):
    os.environ["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(64)

from config.gateway import gateway_settings

from .prod import *  # noqa: F403
from .prod import INSTALLED_APPS, MIDDLEWARE, REST_FRAMEWORK, TEMPLATES

_gateway = gateway_settings(INSTALLED_APPS, MIDDLEWARE, REST_FRAMEWORK, TEMPLATES)
INSTALLED_APPS = _gateway["INSTALLED_APPS"]
MIDDLEWARE = _gateway["MIDDLEWARE"]
REST_FRAMEWORK = _gateway["REST_FRAMEWORK"]
TEMPLATES = _gateway["TEMPLATES"]
ROOT_URLCONF = _gateway["ROOT_URLCONF"]
