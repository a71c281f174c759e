"""The gateway service: what it keeps of the platform's settings, so it can be run on its own.

In production the predict endpoint runs in its own gunicorn (``gateway`` in docker-compose.yml,
``DJANGO_SETTINGS_MODULE=config.settings.gateway``, URLs ``config.urls_gateway``). A pickled
model is code and runs in the process that loads it: apart from the console and the API, it
never sees a staff member's session cookie, the admin, or the console's secret key. The gateway
authenticates by API token only, so it needs neither sessions nor messages.
"""

from __future__ import annotations

# Apps whose only use is the browser console: the admin, its sessions and flash messages.
DROPPED_APPS = ("django.contrib.admin", "django.contrib.sessions", "django.contrib.messages")
DROPPED_MIDDLEWARE = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",  # reads the session
    "django.contrib.messages.middleware.MessageMiddleware",
)
DROPPED_AUTHENTICATION = ("rest_framework.authentication.SessionAuthentication",)
DROPPED_CONTEXT_PROCESSORS = ("django.contrib.messages.context_processors.messages",)
URLCONF = "config.urls_gateway"


def gateway_settings(
    installed_apps: list[str], middleware: list[str], rest_framework: dict, templates: list[dict]
) -> dict:
    """The settings the gateway overrides, derived from the platform's."""
    auth = rest_framework.get("DEFAULT_AUTHENTICATION_CLASSES", [])
    return {
        "INSTALLED_APPS": [a for a in installed_apps if a not in DROPPED_APPS],
        "MIDDLEWARE": [m for m in middleware if m not in DROPPED_MIDDLEWARE],
        "REST_FRAMEWORK": {
            **rest_framework,
            "DEFAULT_AUTHENTICATION_CLASSES": [a for a in auth if a not in DROPPED_AUTHENTICATION],
        },
        "TEMPLATES": [
            {
                **t,
                "OPTIONS": {
                    **t.get("OPTIONS", {}),
                    "context_processors": [
                        p
                        for p in t.get("OPTIONS", {}).get("context_processors", [])
                        if p not in DROPPED_CONTEXT_PROCESSORS
                    ],
                },
            }
            for t in templates
        ],
        "ROOT_URLCONF": URLCONF,
    }
