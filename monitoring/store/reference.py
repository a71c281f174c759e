"""Reading reference records, and the feature types a version's stored files have."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

from registry.models import ModelVersion

from ..columns import (
    feature_of,
    is_feature,
)
from ..models import BatchKind, DataBatch
from .files import parquet_file, read_schema
from .frames import (
    check_columns,
    empty_frame,
    numbers_as_float,
    select_columns,
    to_frame,
    wanted_columns,
)

logger = logging.getLogger(__name__)


def load_reference(
    version: ModelVersion,
    *,
    columns: Sequence[str] | None = None,
    with_sensitive: bool = False,
) -> pd.DataFrame:
    """Every reference record of ``version`` (all its reference batches, oldest first).

    Columns as in ``load_window`` plus ``label`` (float64, NaN when not given).
    """
    check_columns(columns, with_sensitive)
    paths = DataBatch.objects.filter(version=version, kind=BatchKind.REFERENCE).order_by("id")
    tables = []
    for path, size in paths.values_list("path", "size"):
        file = parquet_file(path, size)
        wanted = wanted_columns(file.schema_arrow.names, columns, with_sensitive)
        tables.append(numbers_as_float(file.read(columns=wanted)))
    if not tables:
        empty = empty_frame(columns, version.feature_list, False)
        if columns is None:
            empty["label"] = pd.Series(dtype="float64")
        return empty
    table = pa.concat_tables(tables, promote_options="default")
    if columns is not None:
        table = select_columns(table, columns)
    return to_frame(table)


def stored_feature_types(version: ModelVersion) -> dict[str, str]:
    """``{feature: type}`` (``registry.feature_types``) as in the version's newest file, if any.

    Only for versions registered before types were declared.
    """
    newest = (
        DataBatch.objects.filter(
            version=version, kind__in=[BatchKind.PREDICTIONS, BatchKind.REFERENCE]
        )
        .order_by("-id")
        .values_list("path", "size")
        .first()
    )
    if newest is None:
        return {}
    path, size = newest
    try:
        schema = read_schema(path, size)
    except (OSError, pa.ArrowException):
        logger.warning("could not read the schema of %s", path, exc_info=True)
        return {}
    return {feature_of(f.name): _declared_type(f.type) for f in schema if is_feature(f.name)}


def _declared_type(kind: pa.DataType) -> str:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "string"
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "integer"
    return "number"
