"""The predict request on a lean path: what Django and DRF would answer, without their stack.

Django's handler, its middleware and DRF's view (content negotiation, authentication,
permission, parsing, rendering) were two thirds of the CPU of a 1-instance predict request
(``bench/profiles/gateway_1.txt``), none of it work a prediction needs once the caller is known.
``PredictFastPath`` wraps the gateway's WSGI application: a ``POST /api/v1/predict/<name>/`` it
can answer exactly as the full stack would is served here; every other request, and every
request it is not sure of, goes to Django unchanged (the body it read is handed back).

Served here only when all of this holds, else Django answers:

- the middleware is the platform's (settings.MIDDLEWARE within ``KNOWN_MIDDLEWARE``), and its
  effects are reproduced: the host is one ``ALLOWED_HOSTS`` accepts, no HTTPS redirect is due,
  no query string, the JSON depth and NUL guards of ``config.middleware`` pass, and the security
  headers (HSTS on a secure request, nosniff, referrer and opener policies, X-Frame-Options)
  are those the middleware adds;
- the request is a plain JSON post: ``Content-Type: application/json`` (UTF-8), an ``Accept``
  the JSON renderer serves unparametrised, a body within ``DATA_UPLOAD_MAX_MEMORY_SIZE`` that
  orjson reads as ``PredictJSONParser`` would;
- the caller is known: ``Authorization: Token <token>`` whose check the gateway already made
  and remembered for the current grants generation (``serving.access``: any grant, token or
  user change moves it), not expired, its user active, and its PREDICT decision for this model
  remembered as allowed. The first request of a token, a refused one, or any request after a
  grant change goes through DRF, which makes (and remembers) those decisions;
- ``gateway.serve`` answers (200, or 503 for a halt or an unavailable model): a request it
  refuses (400, 404) is answered by Django, which runs ``serve`` again and words the error.

The answer is the same bytes and headers as DRF's (``PredictRenderer``, ``Allow``); Django's
``request_started`` and ``request_finished`` signals are sent as its handler sends them
(database connections are closed or kept by the same rules).
"""

from __future__ import annotations

import io
import re
from http import HTTPStatus

import orjson
from django.conf import settings
from django.core import signals
from django.http.request import split_domain_port, validate_host
from knox.crypto import hash_token
from knox.settings import knox_settings

from platform_core.api.parsers import depth_error

from . import access, gateway
from .router import read_generations

PATH = re.compile(r"/api/v1/predict/([^/]+)/")
KNOWN_MIDDLEWARE = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",  # static files only
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",  # the predict view is exempt
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "config.middleware.RequestGuardMiddleware",
        "axes.middleware.AxesMiddleware",  # acts on console log-in failures only
    }
)
ACCEPTED = frozenset({"", "*/*", "application/json"})
ALLOW = "POST, OPTIONS"


class PredictFastPath:
    """WSGI middleware: predict requests served without Django's stack when it is safe."""

    def __init__(self, application) -> None:
        self.application = application
        self.enabled: bool | None = None  # decided at the first request (settings loaded)
        self.hosts: dict[str, bool] = {}

    def __call__(self, environ, start_response):
        answer = None
        if environ.get("REQUEST_METHOD") == "POST" and self._enabled():
            answer = self._answer(environ)
        if answer is None:
            return self.application(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _enabled(self) -> bool:
        if self.enabled is None:
            self.enabled = (
                set(settings.MIDDLEWARE) <= KNOWN_MIDDLEWARE
                and not settings.PREPEND_WWW
                and not settings.DISALLOWED_USER_AGENTS
                and not getattr(settings, "SERVING_FAST_PATH_DISABLED", False)
            )
        return self.enabled

    def _answer(self, environ) -> tuple[str, list, bytes] | None:
        """(status, headers, body), or None: Django answers (the body put back if read)."""
        match = PATH.fullmatch(environ.get("PATH_INFO", ""))
        if match is None or environ.get("QUERY_STRING") or environ.get("SCRIPT_NAME"):
            return None
        name = match.group(1)
        if not name.isascii() or "%" in name or "\x00" in name:
            return None
        secure = _is_secure(environ)
        if not self._host_allowed(environ) or (settings.SECURE_SSL_REDIRECT and not secure):
            return None
        if not _plain_json(environ):
            return None
        caller = _token_digest(environ)
        if caller is None:
            return None
        raw = _read_body(environ)
        if raw is None:
            return None
        try:
            return self._serve(name, raw, caller, secure, environ)
        except Exception:
            environ["wsgi.input"] = io.BytesIO(raw)  # Django reads it again, and answers
            return None

    def _serve(self, name: str, raw: bytes, digest: str, secure: bool, environ):
        data = _parse(raw)
        if data is None:
            raise _Refer
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            generations = read_generations(name)
            grants = generations[2] if generations is not None else None
            if grants is None or not _allowed(digest, name, grants):
                raise _Refer
            code, body = gateway.serve(name, data, generations=generations)
            from .api import PredictRenderer  # DRF's renderer settings are read on import

            out = PredictRenderer().render(body)
        finally:
            signals.request_finished.send(sender=self.__class__)
        return _status(code), _headers(out, secure), out

    def _host_allowed(self, environ) -> bool:
        host = _host(environ)
        allowed = self.hosts.get(host)
        if allowed is None:
            domain, _port = split_domain_port(host)
            hosts = settings.ALLOWED_HOSTS
            if settings.DEBUG and not hosts:
                hosts = [".localhost", "127.0.0.1", "[::1]"]
            allowed = bool(domain) and validate_host(domain, hosts)
            if len(self.hosts) < 1000:
                self.hosts[host] = allowed
        return allowed


class _Refer(Exception):
    """Not this path's to answer: Django answers."""


def _host(environ) -> str:
    """``HttpRequest.get_host()`` before validation."""
    if settings.USE_X_FORWARDED_HOST and "HTTP_X_FORWARDED_HOST" in environ:
        return environ["HTTP_X_FORWARDED_HOST"]
    if "HTTP_HOST" in environ:
        return environ["HTTP_HOST"]
    host = environ.get("SERVER_NAME", "")
    port = str(environ.get("SERVER_PORT", ""))
    secure = environ.get("wsgi.url_scheme") == "https"
    return host if port == ("443" if secure else "80") else f"{host}:{port}"


def _is_secure(environ) -> bool:
    """``HttpRequest.is_secure()``: the proxy's header when configured, else the scheme."""
    if settings.SECURE_PROXY_SSL_HEADER:
        header, secure_value = settings.SECURE_PROXY_SSL_HEADER
        value = environ.get(header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return environ.get("wsgi.url_scheme") == "https"


def _plain_json(environ) -> bool:
    media, _, params = environ.get("CONTENT_TYPE", "").partition(";")
    if media.strip().lower() != "application/json":
        return False
    params = params.strip().lower().replace(" ", "")
    if params not in ("", "charset=utf-8", "charset=utf8"):
        return False
    return environ.get("HTTP_ACCEPT", "").strip() in ACCEPTED


def _token_digest(environ) -> str | None:
    """The digest of the token of ``Authorization: Token <token>``, read as knox reads it (the
    header's bytes split on ASCII whitespace), or None."""
    try:
        parts = environ.get("HTTP_AUTHORIZATION", "").encode("iso-8859-1").split()
    except UnicodeEncodeError:
        return None
    if len(parts) != 2 or parts[0].lower() != knox_settings.AUTH_HEADER_PREFIX.encode().lower():
        return None
    try:
        return hash_token(parts[1].decode("utf-8", errors="replace"))
    except (TypeError, ValueError):
        return None


def _allowed(digest: str, name: str, grants: int) -> bool:
    """True when the token's check and its PREDICT decision on ``name`` are remembered for this
    grants generation and still hold (not expired, the user active)."""
    auth_token = access.remembered_token(digest, grants)
    if auth_token is None or not auth_token.user.is_active:
        return False
    return access.remembered_decision(auth_token, name, grants) is True


def _read_body(environ) -> bytes | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    if length <= 0 or (limit is not None and length > limit):
        return None
    raw = environ["wsgi.input"].read(length)
    if len(raw) != length:
        environ["wsgi.input"] = io.BytesIO(raw)
        return None
    return raw


def _parse(raw: bytes):
    """The body as ``PredictJSONParser`` reads it, or None when only DRF may say (an error, a
    body the request guard refuses, a sensitive value orjson reads differently). An integer
    feature beyond 64 bits, which orjson reads as a float, fails validation: Django answers."""
    from .api import _sensitive_exact

    if b"\x00" in raw or b"\\u0000" in raw:  # the request guard's NUL check is Django's
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or not _sensitive_exact(data):
        return None
    if depth_error(raw.decode("utf-8")) is not None:
        return None
    return data


def _status(code: int) -> str:
    return f"{code} {HTTPStatus(code).phrase}"


def _headers(body: bytes, secure: bool) -> list[tuple[str, str]]:
    """What DRF's response and the middleware put on a predict answer."""
    headers = [("Content-Type", "application/json"), ("Allow", ALLOW)]  # one renderer: no Vary
    middleware = settings.MIDDLEWARE
    if "django.middleware.clickjacking.XFrameOptionsMiddleware" in middleware:
        headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()))
    if "django.middleware.common.CommonMiddleware" in middleware:
        headers.append(("Content-Length", str(len(body))))
    if "django.middleware.security.SecurityMiddleware" in middleware:
        headers += _security_headers(secure)
    return headers


def _security_headers(secure: bool) -> list[tuple[str, str]]:
    """``SecurityMiddleware.process_response``'s headers."""
    headers = []
    if settings.SECURE_HSTS_SECONDS and secure:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append(("Strict-Transport-Security", value))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        values = policy.split(",") if isinstance(policy, str) else policy
        headers.append(("Referrer-Policy", ",".join(v.strip() for v in values)))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    return headers
