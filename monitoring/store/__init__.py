"""Parquet storage of production data: predictions, labels and reference records.

Layout: ``monitoring/<model>/<kind>/day=YYYY-MM-DD/<uuid>.parquet`` in the platform's storage
(``platform_core.storage``: ``VAR_DIR`` on this host, or an S3-compatible object store), one file
per ingested batch and UTC day, until the daily compaction (``compact``) merges a closed
(version, day)'s files into one per kind. A file is written whole under its final, unique
key; only then does its ``DataBatch`` manifest row commit (``governance.filestore``,
architecture §5). A request that fails after writing removes its files (``discard``); a crash
in between leaves an orphan that ``sweep_orphans`` removes. Readers only ever open files a
committed ``DataBatch`` points to (the manifest, never a directory listing, says which files a
window needs), and only the columns and row groups they need.
A prediction file has an id index beside it (``<uuid>.ids.npy``, ``DataBatch.id_index``: its
ids' sorted 64-bit digests), which later merges combine per version and day; the duplicate check
of a new batch searches those, never the day's ids (see "The prediction id index" below).

Typed columns
-------------
predictions and reference
    ``prediction_id`` (string), ``timestamp`` (timestamp[us, UTC]), ``score`` (float64),
    ``prediction`` (int8, null when not logged), ``f.<feature>`` (the version's declared type:
    float64, int64, bool or string; readers get int64 and bool as float64, so the statistics
    see numbers as before), ``s.<attribute>`` (string; sensitive, loaded only on request),
    ``version`` (string); reference files add ``label`` (int8, null when not given), and their
    ``prediction_id`` and ``timestamp`` may be null. Rows are sorted by timestamp, so a window
    boundary inside a day is a binary search, not a filter.
labels
    ``prediction_id`` (string), ``label`` (int8), ``label_time`` (timestamp[us, UTC]) and where the
    labelled prediction is stored: ``batch`` (its ``DataBatch`` id) and ``row`` (its row in that
    file). A label file lives in the partition of its prediction's day, one file per (version,
    day), so the labels of a window are in the window's partitions, and joining them is a scatter
    by position instead of a hash join on 1M string ids.

Modules
-------
``files`` writes partition files and removes them (``governance.filestore``; ``retire`` keeps a
replaced one for ``ORPHAN_GRACE``); ``compact`` merges a closed day's files; ``window`` reads
predictions, ``labels`` the latest label of each, ``reference`` the reference records; ``ids``
is the prediction id index (duplicate checks, label look-ups); ``frames`` holds what the
readers share. The names other modules use are re-exported here.
"""

from ..columns import FEATURE_PREFIX, SENSITIVE_PREFIX, feature_column, sensitive_column
from .files import (
    COMPRESSION,
    DATA_DIR,
    ID_INDEX_SUFFIX,
    StoredFile,
    combined_digest,
    delete_files,
    discard,
    load_id_index,
    parquet_file,
    partition_of,
    read_schema,
    read_table,
    referenced,
    resolve,
    retire,
    root,
    sweep_orphans,
    write_by_day,
    write_file,
)
from .frames import BASE_COLUMNS, LABEL_COLUMNS, TIMESTAMP, as_utc, to_frame, to_us
from .ids import (
    Located,
    compact_id_index,
    id_digests,
    locate_predictions,
    lock_version,
    stored_duplicates,
)
from .reference import load_reference, stored_feature_types
from .window import load_window, recent_records

__all__ = [
    "BASE_COLUMNS",
    "COMPRESSION",
    "DATA_DIR",
    "FEATURE_PREFIX",
    "ID_INDEX_SUFFIX",
    "LABEL_COLUMNS",
    "SENSITIVE_PREFIX",
    "TIMESTAMP",
    "Located",
    "StoredFile",
    "as_utc",
    "combined_digest",
    "compact_id_index",
    "delete_files",
    "discard",
    "feature_column",
    "id_digests",
    "load_id_index",
    "load_reference",
    "load_window",
    "locate_predictions",
    "lock_version",
    "parquet_file",
    "partition_of",
    "read_schema",
    "read_table",
    "recent_records",
    "referenced",
    "resolve",
    "retire",
    "root",
    "sensitive_column",
    "stored_duplicates",
    "stored_feature_types",
    "sweep_orphans",
    "to_frame",
    "to_us",
    "write_by_day",
    "write_file",
]
