"""Settings shared by every setup.

Every external part has an embedded default (SQLite, a local MLflow store, Celery on the filesystem
transport, all under ``var/``) and an environment variable that switches it to the real thing.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = environ.Env()

VAR_DIR = Path(env("GOVERNANCE_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# MLflow must never call home; set before anything imports mlflow.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "registry",
    "governance",
    "monitoring",
    "incidents",
    "serving",
    "console",
    "demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Refuses deeply nested JSON and NUL bytes in query parameters before any view runs.
    "config.middleware.RequestGuardMiddleware",
    # Last: locks a username+IP out of the console login after AXES_FAILURE_LIMIT failures.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "console.context_processors.halts",
                "console.context_processors.work",
            ],
        },
    },
]


def _sqlite(path: Path) -> dict:
    # Web, worker and beat write concurrently: WAL, BEGIN IMMEDIATE and a generous busy timeout.
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(path.with_name("test_" + path.name))},
        # Reusing the connection takes ~8 ms off every request (measured on predict).
        "CONN_MAX_AGE": env.int("DATABASE_CONN_MAX_AGE", default=60),
    }


if env("DATABASE_URL", default=""):
    DATABASES = {"default": env.db("DATABASE_URL")}
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
else:
    DATABASES = {"default": _sqlite(VAR_DIR / "governance.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Shared by every process of a host (the write throttle counts here); CACHE_URL=redis://... in a
# fleet of hosts, so a token's budget is one budget.
CACHES = {
    "default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}"),
}

# Argon2 first: new and changed passwords are stored with it; older hashes still verify and
# are upgraded at the next login.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]

# django-axes: brute-force protection of every password login (the admin/console login; the API
# takes tokens only). The axes backend must come first so a locked-out pair is refused before
# the password is even checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
# One username from one address: an attacker cannot lock a user out from everywhere, and
# spraying many usernames from one address is still counted per pair.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_COOLOFF_MESSAGE = (
    "Too many failed login attempts for this account from your address: login is locked for "
    "a while. Try again later or ask an administrator to reset the lock (axes_reset_username)."
)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.authentication.ScopedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Deny by default: every view names the action it needs.
    "DEFAULT_PERMISSION_CLASSES": ["governance.permissions.RolePermission"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "platform_core.api.parsers.DepthLimitedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "platform_core.api.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 100,
    # Writes (POST, PUT, PATCH, DELETE) are counted per token (per user for a session); reads
    # and the predict gateway are not throttled here.
    "DEFAULT_THROTTLE_CLASSES": ["platform_core.api.throttling.WriteRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"write": env("API_WRITE_THROTTLE_RATE", default="600/min")},
    "EXCEPTION_HANDLER": "platform_core.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
KNOX_TOKEN_MODEL = "knox.AuthToken"
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env.int("API_TOKEN_TTL_DAYS", default=90)),
    "AUTO_REFRESH": False,
    "TOKEN_LIMIT_PER_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Model Governance API",
    "DESCRIPTION": (
        "Registry, lifecycle and governance of deployed crime-analytics models. "
        "Authenticate with `Authorization: Token <token>` (see `manage.py create_token`)."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "platform_core.api.schema_errors.document_errors",
    ],
    # choice sets that share a field name get names of their own instead of hashed ones
    "ENUM_NAME_OVERRIDES": {
        "IncidentKindEnum": "incidents.models.IncidentKind",
        "IncidentStatusEnum": "incidents.models.IncidentStatus",
        "StepStatusEnum": "incidents.models.StepStatus",
        "RollbackStatusEnum": "incidents.models.RollbackStatus",
        "NotificationStatusEnum": "incidents.models.NotificationStatus",
        # labels and predicted classes share the choice set {0, 1}
        "BinaryClassEnum": [(0, 0), (1, 1)],
    },
}

# --- MLflow -----------------------------------------------------------------------------------
MLFLOW_TRACKING_URI = env("MLFLOW_TRACKING_URI", default=f"sqlite:///{VAR_DIR / 'mlflow.db'}")
MLFLOW_REGISTRY_URI = env("MLFLOW_REGISTRY_URI", default=MLFLOW_TRACKING_URI)
MLFLOW_ARTIFACT_ROOT = Path(env("MLFLOW_ARTIFACT_ROOT", default=str(VAR_DIR / "mlartifacts")))
MLFLOW_EXPERIMENT = env("MLFLOW_EXPERIMENT", default="governance")
# Where the bridge keeps verified local copies of artifacts (warm standby).
ARTIFACT_CACHE_DIR = Path(env("ARTIFACT_CACHE_DIR", default=str(VAR_DIR / "artifact-cache")))
# Where registration may read artifacts from (artifacts are code: see registry.artifact_sources).
# Always allowed: models:/ and runs:/ of the configured MLflow registry, and files or URIs under
# MLFLOW_ARTIFACT_ROOT; these add further roots (absolute paths or URI prefixes such as s3://b/p).
ARTIFACT_SOURCE_ROOTS = env.list("ARTIFACT_SOURCE_ROOTS", default=[])
# Larger artifacts are refused while they are downloaded or copied (400).
ARTIFACT_MAX_BYTES = env.int("ARTIFACT_MAX_BYTES", default=500 * 1024 * 1024)
# The isolated probe child (registry.sandbox): seconds and address space before it is killed.
ARTIFACT_PROBE_TIMEOUT = env.float("ARTIFACT_PROBE_TIMEOUT", default=120.0)
ARTIFACT_PROBE_MEMORY_BYTES = env.int("ARTIFACT_PROBE_MEMORY_BYTES", default=4 * 1024**3)
# Run the probe as this user when the web process is root ("" keeps root: not recommended).
ARTIFACT_PROBE_USER = env("ARTIFACT_PROBE_USER", default="nobody")
# Temporary fetch-/log-/probe- directories of killed workers older than this are swept hourly.
ARTIFACT_TEMP_MAX_AGE = timedelta(minutes=env.int("ARTIFACT_TEMP_MAX_AGE_MINUTES", default=60))

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="filesystem://")
CELERY_QUEUE_DIR = VAR_DIR / "celery"


def filesystem_broker_folders(queue_dir: Path) -> dict[str, str]:
    """The embedded (filesystem) broker's folders under ``queue_dir``, created if missing."""
    for sub in ("queue", "processed", "control"):
        (queue_dir / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue_dir / "queue"),
        "data_folder_out": str(queue_dir / "queue"),
        "processed_folder": str(queue_dir / "processed"),
        "control_folder": str(queue_dir / "control"),
    }


if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **filesystem_broker_folders(CELERY_QUEUE_DIR),
        "store_processed": False,
    }
else:
    # A message a killed worker held comes back after this many seconds (acks_late): short, so
    # a rollback interrupted by a dead worker still completes within the specification's 5 min.
    # Every task is idempotent, so a long task redelivered while still running changes nothing.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=120)
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "incidents.*": {"queue": "urgent"},
    # a restore must be verified and warmed without waiting behind monitoring jobs
    "serving.verify_promotion": {"queue": "urgent"},
    "serving.warm_standby": {"queue": "urgent"},
    "monitoring.*": {"queue": "monitoring"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
# django-celery-beat's DatabaseScheduler syncs these into its tables.
CELERY_BEAT_SCHEDULE = {
    "escalate-overdue-stages": {"task": "governance.escalate_overdue_stages", "schedule": 900.0},
    "sweep-orphan-artifacts": {"task": "registry.sweep_orphans", "schedule": 3600.0},
    "sweep-orphan-evidence": {"task": "governance.sweep_orphan_evidence", "schedule": 3600.0},
    "sweep-orphan-monitoring-data": {"task": "monitoring.sweep_orphan_data", "schedule": 3600.0},
    "trim-stale-cache": {"task": "serving.trim_stale_cache", "schedule": 86400.0},
    "escalate-overdue-steps": {"task": "incidents.escalate_overdue_steps", "schedule": 60.0},
    # outbox rows due for a retry are delivered even if no task chain is waiting for them
    "deliver-notifications": {"task": "incidents.deliver_notifications", "schedule": 30.0},
    "check-ethics-limits": {"task": "incidents.check_ethics_limits", "schedule": 300.0},
    # a safety net: gateways announce their prediction-log spool themselves while they run
    "ingest-prediction-log": {"task": "serving.ingest_prediction_log", "schedule": 60.0},
    "record-shadow-evaluations": {
        "task": "serving.record_shadow_evaluations",
        "schedule": 3600.0,
    },
    # the whole chain, recorded in AuditVerificationState (shown on the console's audit page)
    "verify-audit-chain": {"task": "governance.verify_audit", "schedule": 86400.0},
    "purge-expired-predictions": {
        "task": "monitoring.purge_expired_predictions",
        "schedule": 86400.0,
    },
    # estimated concept-drift windows whose labels arrived: realised value, gap, alert settled
    "reconcile-performance-estimates": {
        "task": "monitoring.reconcile_estimates",
        "schedule": 86400.0,
    },
}

# --- Notifications ----------------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "mail"
EMAIL_HOST = env("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="governance@localhost")
PAGING_URL = env("PAGING_URL", default="")
PAGING_ROUTING_KEYS = env.dict("PAGING_ROUTING_KEYS", default={})

# --- Platform ---------------------------------------------------------------------------------
# Where production data, evidence and the prediction log live (platform_core/storage.py): empty
# for VAR_DIR on this host (the embedded default), or s3://bucket/prefix for an S3-compatible
# object store shared by every host (endpoint and credentials from the AWS_* environment).
STORAGE_URL = env("GOVERNANCE_STORAGE_URL", default="")
STORAGE_S3_ENDPOINT = env("AWS_ENDPOINT_URL", default="")
STORAGE_S3_REGION = env("AWS_REGION", default=env("AWS_DEFAULT_REGION", default="us-east-1"))
STORAGE_S3_ACCESS_KEY = env("AWS_ACCESS_KEY_ID", default="")
STORAGE_S3_SECRET_KEY = env("AWS_SECRET_ACCESS_KEY", default="")
# Orphaned artifacts (written but never committed) older than this are removed by the sweeper.
ORPHAN_GRACE = timedelta(hours=env.int("ORPHAN_GRACE_HOURS", default=6))
# CI posts validation splits as JSON; larger batches belong in a CSV or Parquet upload.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024 * 1024)
# Where alerts go once written: the incidents layer's router (incidents, paging, rollback).
MONITORING_ALERT_HOOK = env("MONITORING_ALERT_HOOK", default="incidents.alert_response.route_alert")
# Live versions per task of the daily and weekly fan-out (monitoring.schedule): every worker
# creates runs and starts them early instead of one worker creating every run.
MONITORING_FAN_OUT_CHUNK = env.int("MONITORING_FAN_OUT_CHUNK", default=50)
# Daily compaction (monitoring.compact_partitions, 01:00 UTC): each closed (version, day)
# partition's prediction files merged into one, and its label files into one. A day is closed
# once it is AFTER_DAYS days before today (0: yesterday is merged at 01:00, before the 02:00
# checks read it; a gateway batch of yesterday arriving later is a second file, merged the next
# night); only the LOOKBACK_DAYS before that are looked at; CHUNK partitions per task.
MONITORING_COMPACT_ENABLED = env.bool("MONITORING_COMPACT_ENABLED", default=True)
MONITORING_COMPACT_AFTER_DAYS = env.int("MONITORING_COMPACT_AFTER_DAYS", default=0)
MONITORING_COMPACT_LOOKBACK_DAYS = env.int("MONITORING_COMPACT_LOOKBACK_DAYS", default=7)
MONITORING_COMPACT_CHUNK = env.int("MONITORING_COMPACT_CHUNK", default=20)
# Told when the live model cannot serve: the incidents layer opens a playbook-3 outage incident.
SERVING_OUTAGE_HOOK = env("SERVING_OUTAGE_HOOK", default="incidents.outage.report_outage")
# How governance (a lower layer) tells people: the incidents layer's notification outbox.
GOVERNANCE_NOTIFY_HOOK = env(
    "GOVERNANCE_NOTIFY_HOOK", default="incidents.notifications.notify_role_by_email"
)
# What else waits for a person beside sign-offs (incident steps, audit tasks): the admin's
# approvals inbox lists it; the console's My work provides it.
GOVERNANCE_WORK_HOOK = env("GOVERNANCE_WORK_HOOK", default="console.work.other_work")
NOTIFICATION_WEBHOOK_URL = env("NOTIFICATION_WEBHOOK_URL", default="")
NOTIFICATION_WEBHOOK_SECRET = env("NOTIFICATION_WEBHOOK_SECRET", default="")
# Outbox retries wait base * 2^(attempt-1) seconds, capped.
NOTIFICATION_BACKOFF_SECONDS = env.float("NOTIFICATION_BACKOFF_SECONDS", default=10.0)
NOTIFICATION_BACKOFF_MAX_SECONDS = env.float("NOTIFICATION_BACKOFF_MAX_SECONDS", default=1800.0)
# Drill and test knob only (keep 0 in production): a rollback task sleeps this many seconds right
# after its switch commits, so a drill can kill the worker in the middle of a rollback.
INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH = env.float(
    "INCIDENTS_ROLLBACK_PAUSE_AFTER_SWITCH", default=0.0
)
IDEMPOTENCY_TTL = timedelta(hours=env.int("IDEMPOTENCY_TTL_HOURS", default=24))
# A request holds its Idempotency-Key while it runs; a claim older than this was left by a crashed
# process and is taken over. Keep it above the longest a request may run (gunicorn's timeout).
IDEMPOTENCY_CLAIM_TIMEOUT = timedelta(
    seconds=env.int("IDEMPOTENCY_CLAIM_TIMEOUT_SECONDS", default=300)
)

# --- Audit chain ------------------------------------------------------------------------------
# The key of the audit chain's HMAC links and checkpoint signatures: never in the database.
# Unset (embedded default): a random key made on first use in AUDIT_HMAC_KEY_FILE (mode 0600).
# prod.py requires it. Changing it needs `manage.py audit_rekey --old-key-file ...`.
AUDIT_HMAC_KEY = env("AUDIT_HMAC_KEY", default="")
AUDIT_HMAC_KEY_FILE = Path(env("AUDIT_HMAC_KEY_FILE", default=str(VAR_DIR / "audit_hmac_key")))
# Signed checkpoints of the chain head go to an append-only store outside the database.
AUDIT_CHECKPOINT_STORE = env(
    "AUDIT_CHECKPOINT_STORE", default="governance.audit_checkpoints.DirectoryStore"
)
AUDIT_CHECKPOINT_DIR = Path(env("AUDIT_CHECKPOINT_DIR", default=str(VAR_DIR / "audit-checkpoints")))
# For governance.audit_checkpoints.S3ObjectLockStore (a bucket with Object Lock enabled).
AUDIT_CHECKPOINT_S3_BUCKET = env("AUDIT_CHECKPOINT_S3_BUCKET", default="")
AUDIT_CHECKPOINT_S3_PREFIX = env("AUDIT_CHECKPOINT_S3_PREFIX", default="audit-checkpoints/")
AUDIT_CHECKPOINT_RETENTION_DAYS = env.int("AUDIT_CHECKPOINT_RETENTION_DAYS", default=2557)

# --- API hardening ---------------------------------------------------------------------------
# Bodies nesting arrays/objects deeper than this are refused with a 400 before parsing.
JSON_MAX_DEPTH = env.int("JSON_MAX_DEPTH", default=32)
# The largest page a list endpoint serves (?limit= above it is a 400).
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)
# /readyz: details (models, versions, digests, check messages) only for authenticated staff or a
# caller sending this token as "Authorization: Bearer <token>" (a monitoring probe); empty: none.
READYZ_DETAIL_TOKEN = env("READYZ_DETAIL_TOKEN", default="")
# How long one readiness result is reused: parallel probes share one run of the checks.
READYZ_CACHE_SECONDS = env.float("READYZ_CACHE_SECONDS", default=5.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "alembic": {"level": "WARNING"},
        "mlflow": {"level": "WARNING"},
        # its start-up banner on every manage.py command; lockouts still log at WARNING
        "axes.apps": {"level": "WARNING"},
    },
}
