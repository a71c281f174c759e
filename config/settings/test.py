"""Test settings: development defaults, fast hashing, mail kept in memory."""

from .dev import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
WHITENOISE_AUTOREFRESH = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Each test run gets its own MLflow store and artifact cache: MLflow is real, but never shared.
import os  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

_RUN_DIR = Path(tempfile.mkdtemp(prefix="governance-test-"))
# The artifact probe drops to an unprivileged user when the suite runs as root: let it reach the
# run's MLflow store and artifact cache (mkdtemp makes the directory private to its owner).
_RUN_DIR.chmod(0o755)
MLFLOW_TRACKING_URI = f"sqlite:///{_RUN_DIR / 'mlflow.db'}"
MLFLOW_REGISTRY_URI = MLFLOW_TRACKING_URI
MLFLOW_ARTIFACT_ROOT = _RUN_DIR / "mlartifacts"
ARTIFACT_CACHE_DIR = _RUN_DIR / "artifact-cache"
# A fixed audit key, and checkpoints of this run apart from the demo's (tests/conftest.py gives
# each test a directory of its own).
AUDIT_HMAC_KEY = "test-audit-hmac-key-not-a-secret-0123456789abcdef"
AUDIT_CHECKPOINT_DIR = _RUN_DIR / "audit-checkpoints"

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # This run's own test database: two runs in one checkout (bin/test's legs, a helper's run
    # beside CI) never share a file.
    DATABASES["default"]["TEST"] = {"NAME": str(_RUN_DIR / "test.sqlite3")}  # noqa: F405

if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    # Transactional tests flush with TRUNCATE, which the audit table refuses outside maintenance.
    DATABASES["default"].setdefault("OPTIONS", {})["options"] = "-c governance.allow_truncate=on"  # noqa: F405
    # Two runs on one server at once (bin/test's real-worker leg beside the main one) each need a
    # test database of their own: TEST_DB_SUFFIX=_workers makes it test_<name>_workers.
    _suffix = os.environ.get("TEST_DB_SUFFIX", "")
    if _suffix:
        if not _suffix.replace("_", "").isalnum():
            raise RuntimeError(f"TEST_DB_SUFFIX may hold letters, digits and _ only: {_suffix!r}")
        _name = DATABASES["default"]["NAME"]  # noqa: F405
        DATABASES["default"]["TEST"] = {"NAME": f"test_{_name}{_suffix}"}  # noqa: F405

# Tasks the suite enqueues on the embedded broker stay in this run's directory, so a demo started
# later in the same checkout never receives them.
if CELERY_BROKER_URL.startswith("filesystem://"):  # noqa: F405
    CELERY_QUEUE_DIR = _RUN_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        **CELERY_BROKER_TRANSPORT_OPTIONS,  # noqa: F405
        **filesystem_broker_folders(CELERY_QUEUE_DIR),  # noqa: F405
    }

# Writes are not throttled in the suite (the throttling test sets a rate of its own) and the
# cache is per process and in memory.
REST_FRAMEWORK = {
    **REST_FRAMEWORK,  # noqa: F405
    "DEFAULT_THROTTLE_RATES": {"write": None},
}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# Every /readyz call runs its checks (the caching test sets a lifetime of its own).
READYZ_CACHE_SECONDS = 0.0
