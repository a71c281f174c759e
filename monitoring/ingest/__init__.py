"""Services for production data: ingest predictions, labels and reference data; purge old logs.

Records arrive as JSON (``{"prediction_id": "p-1", "timestamp": "2026-01-05T10:00:00Z",
"features": {"x1": 0.3}, "score": 0.73, "prediction": 1, "sensitive": {"race": "b"}}``) or as an
uploaded CSV or Parquet file with the columns ``prediction_id, timestamp, score, prediction``, one
column per feature (named as in the version's ``feature_list``) and ``sensitive.<attribute>``.
Labels: ``{"prediction_id": "p-1", "label": 1, "label_time": "..."}`` (``label_time`` defaults to
now), or a file with those columns. Reference records have the prediction shape plus an optional
``label``; their ``prediction_id`` and ``timestamp`` are optional.

Feature values are checked against the types the version declares (``ModelVersion.feature_types``,
see ``registry.feature_types``): a ``number`` or ``integer`` feature takes numbers (an integer a
whole one), a ``boolean`` true/false (or 0/1), a ``string`` text (numbers become their text);
null is always allowed. The Parquet files store the declared type. A version registered before
types were declared keeps the types its stored files have (else ``number``). Timestamps must lie
between the version's ``training_data_start`` and a few minutes after now
(``MONITORING_MAX_FUTURE_SECONDS``).

Every record is checked by ``governance.records`` (the parser validation evidence uses too),
column by column with numpy where it can be; a batch is stored whole or refused whole with 400
naming the record (0-based, in the order given) and field, e.g.
``{"records[3].score": ["must be a number in [0, 1]"]}``. Accepted records are written to Parquet
first (``monitoring.store``), then their ``DataBatch`` rows and the audit event commit in one
transaction (``governance.filestore``). Ingestion works for a version in any stage.

One module per aggregate: ``predictions``, ``labels``, ``reference``, ``retention``; what they
share (schemas, bounds, stored tables, the commit) is in ``common``. The names other apps and
tasks import are re-exported here.
"""

from .common import EARLIEST_TIMESTAMP, feature_types_of, max_future_seconds, timestamp_bounds
from .labels import labels_ingest
from .predictions import predictions_ingest
from .reference import ReferenceResult, reference_ingest
from .retention import PURGE_TASK, purge_expired, retention_days

__all__ = [
    "EARLIEST_TIMESTAMP",
    "PURGE_TASK",
    "ReferenceResult",
    "feature_types_of",
    "labels_ingest",
    "max_future_seconds",
    "predictions_ingest",
    "purge_expired",
    "reference_ingest",
    "retention_days",
    "timestamp_bounds",
]
