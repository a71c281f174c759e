"""Production settings: no default secret, HTTPS everywhere, ``check --deploy`` clean."""

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.secret_key import weak_key_reason

from .base import *  # noqa: F403
from .base import STATIC_ROOT, env

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if (_weak := weak_key_reason(SECRET_KEY)) is not None:
    raise ImproperlyConfigured(
        f"DJANGO_SECRET_KEY is refused: {_weak}. Set it to a random string of at least 50 "
        "characters (generate one with: python -c 'import secrets; "
        "print(secrets.token_urlsafe(64))')."
    )

# The audit chain's key must come from the environment (a secret store), never from a file
# beside the database it protects.
AUDIT_HMAC_KEY = env("AUDIT_HMAC_KEY", default="")
if len(AUDIT_HMAC_KEY) < 43:
    raise ImproperlyConfigured(
        "AUDIT_HMAC_KEY must be set to a random string of at least 43 characters in production, "
        "kept outside the database (generate one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(48))')."
    )

DEBUG = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"

# Static files are collected into the image at build time, so they must not live under
# GOVERNANCE_VAR_DIR, which is a volume in production (a volume would keep serving old files
# after an upgrade). The Dockerfile sets DJANGO_STATIC_ROOT=/app/staticfiles.
STATIC_ROOT = Path(env("DJANGO_STATIC_ROOT", default=str(STATIC_ROOT)))
