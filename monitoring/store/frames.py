"""What every reader shares: time units, stored column types, Arrow to pandas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from registry.models import ModelVersion, RegisteredModel

from ..columns import (
    feature_column,
    is_feature,
    is_sensitive,
)

TIMESTAMP = pa.timestamp("us", tz="UTC")
BASE_COLUMNS = ("prediction_id", "timestamp", "score", "prediction")
LABEL_COLUMNS = ("label", "label_time")
NAT = np.iinfo(np.int64).min
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def as_utc(value: datetime | date | str) -> datetime:
    if isinstance(value, str):
        value = pd.Timestamp(value).to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), UTC)
    raise TypeError(f"expected a datetime or date, got {type(value).__name__}")


def to_us(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the stored timestamp unit)."""
    return (value - EPOCH) // timedelta(microseconds=1)


def model_id_of(model: RegisteredModel | str | int) -> int:
    if isinstance(model, RegisteredModel):
        return model.pk
    if isinstance(model, int):
        return model
    return RegisteredModel.objects.values_list("pk", flat=True).get(name=model)


def version_id_of(model_id: int, version: ModelVersion | str | int | None) -> int | None:
    if version is None or isinstance(version, int):
        return version
    if isinstance(version, ModelVersion):
        return version.pk
    return ModelVersion.objects.values_list("pk", flat=True).get(model_id=model_id, version=version)


def timestamps_us(table: pa.Table) -> np.ndarray:
    column = table.column("timestamp")
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    return array.cast(pa.int64()).fill_null(NAT).to_numpy()


def wanted_columns(
    names: Sequence[str], columns: Sequence[str] | None, with_sensitive: bool
) -> list[str]:
    if columns is None:
        return [n for n in names if with_sensitive or not is_sensitive(n)]
    present = set(names)
    return [c for c in columns if c in present]


def numbers_as_float(table: pa.Table) -> pa.Table:
    """Integer and boolean features as float64: what the checks and the statistics expect."""
    for index, f in enumerate(table.schema):
        if is_feature(f.name) and (pa.types.is_integer(f.type) or pa.types.is_boolean(f.type)):
            table = table.set_column(index, f.name, pc.cast(table.column(index), pa.float64()))
    return table


def to_frame(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas; 0/1 columns become float64 with NaN for absent, as ``stats`` expects."""
    for name in ("prediction", "label"):
        if name in table.column_names and not pa.types.is_floating(table.schema.field(name).type):
            index = table.column_names.index(name)
            table = table.set_column(index, name, pc.cast(table.column(name), pa.float64()))
    return table.to_pandas(split_blocks=True, self_destruct=True)


def empty_frame(
    columns: Sequence[str] | None, feature_names: Sequence[str], labels: bool
) -> pd.DataFrame:
    names = (
        list(columns)
        if columns is not None
        else [
            *BASE_COLUMNS,
            *(feature_column(f) for f in feature_names),
            "version",
        ]
    )
    if labels:
        names += [c for c in LABEL_COLUMNS if c not in names]
    return to_frame(pa.schema([pa.field(n, column_type(n)) for n in names]).empty_table())


def column_type(name: str) -> pa.DataType:
    """The type of a column no stored file has (categorical features would be strings)."""
    if name in ("timestamp", "label_time"):
        return TIMESTAMP
    if name in ("prediction_id", "version") or is_sensitive(name):
        return pa.string()
    return pa.float64()


def select_columns(table: pa.Table, columns: Sequence[str]) -> pa.Table:
    """``columns`` in that order; one that no file had comes back all null."""
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(name, pa.nulls(table.num_rows, column_type(name)))
    return table.select(list(columns))


def check_columns(columns: Sequence[str] | None, with_sensitive: bool) -> None:
    if columns is None:
        return
    if isinstance(columns, str):
        raise TypeError("columns must be a list of column names")
    hidden = [c for c in columns if is_sensitive(c)]
    if hidden and not with_sensitive:
        raise ValueError(f"sensitive columns {hidden} need with_sensitive=True")


@dataclass
class Part:
    """One prediction file's contribution to a window."""

    batch_id: int
    table: pa.Table
    offset: int  # rows [offset, offset + table.num_rows) of the file, when positions is None
    positions: np.ndarray | None = None  # the file rows kept, when they were not one range
    times: np.ndarray | None = None  # the rows' timestamps (us), when its day has other parts
    day: date | None = None
