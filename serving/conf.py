"""The gateway's settings, each with a default, read through ``setting(name)``.

Set any of them in ``config/settings``; the defaults suit the embedded single-machine setup.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Dotted path of ``hook(*, model, version, kind, detail)``, told when the live model cannot
    # serve (playbook 3). The incidents app points it at the function that opens an outage.
    "SERVING_OUTAGE_HOOK": "serving.cache.log_outage",
    # Tell the hook about the same (model, kind) at most this often per process.
    "SERVING_OUTAGE_REPORT_SECONDS": 60.0,
    # "auto": Redis when CELERY_BROKER_URL is a redis:// URL, else a database row.
    "SERVING_GENERATION_BACKEND": "auto",
    "SERVING_REDIS_URL": None,  # default: CELERY_BROKER_URL
    # Safety net: rebuild a route after this many seconds even if no bump was seen.
    # None: 5 s with Redis (an INCR after commit could be lost), never with the database backend
    # (there the bump commits with the change).
    "SERVING_ROUTE_MAX_AGE": None,
    "SERVING_MAX_INSTANCES": 1000,
    # A feature value larger than this in magnitude is the client's 400 (1e308 is finite, but
    # overflows in the model): the gateway scores only values it can vouch for.
    "SERVING_MAX_ABS_FEATURE": 1e12,
    # After a failed load, the next attempt waits this long (stale answers meanwhile).
    "SERVING_LOAD_RETRY_SECONDS": 5.0,
    # Score sklearn predict_proba models directly once a probe showed it equals the pyfunc.
    "SERVING_FAST_PATH": True,
    # skops artifacts: the types skops.io does not trust by default that may still be loaded
    # (sklearn's own tree and calibration internals). A file holding any other is refused,
    # naming them; skops's default trust (sklearn estimators, numpy, builtins) applies as well.
    "SERVING_SKOPS_TRUSTED_TYPES": (
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
    ),
    # Prediction log: the gateway writes a spool file every N predictions or T seconds (0: only
    # when flush() is called) and enqueues serving.ingest_prediction_log at most every I seconds;
    # the worker merges the spool into one monitoring-store ingestion per M predictions, and puts
    # back a claim older than C seconds (its worker died).
    # Each ingestion reads the ids the version already stored that day: fewer, larger is cheaper.
    "SERVING_LOG_BATCH_SIZE": 20_000,
    "SERVING_LOG_FLUSH_SECONDS": 5.0,
    "SERVING_LOG_INGEST_SECONDS": 60.0,
    "SERVING_LOG_INGEST_MAX_ROWS": 200_000,
    "SERVING_LOG_CLAIM_SECONDS": 900.0,
    # Stale cache: the newest rows kept per process (keyed into an LRU only when read), and the
    # shared copy in the database (at most the newest M rows written per flush).
    "SERVING_STALE_CACHE_SIZE": 100_000,
    "SERVING_STALE_CACHE_DAYS": 7,
    "SERVING_STALE_STORE_MAX_PER_FLUSH": 5000,
    # Shadow scoring of the staging version, after the response: one thread per process scores
    # what is queued every T seconds, in one call per version; at most N requests wait.
    "SERVING_SHADOW_INTERVAL": 0.05,
    "SERVING_SHADOW_MAX_PENDING": 1000,
}


def setting(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


GLOBAL = "global"  # the reserved scope of the global halt (registry.models.RESERVED_MODEL_NAMES)
GRANTS = "__grants__"  # generation key bumped when role grants or tokens change
