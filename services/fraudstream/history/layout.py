"""The archive's layout: where each record goes and the columns it becomes.

    <root>/<topic>/date=YYYY-MM-DD/<topic>+<partition>+<first offset, 10 digits>.parquet

The same paths as Kafka Connect's S3 sink with a time-based partitioner on the record's
event time (`path.format='date'=YYYY-MM-dd`, `filename.offset.zero.pad.width=10`), so the
directory of a topic reads as a Hive-partitioned dataset (a `date` column) in DuckDB,
pyarrow, Spark or Trino. Each file holds the records of one Kafka partition from its first
offset on, for one event date; `kafka_partition` and `kafka_offset` identify every row.

Columns are the topic's contract (contracts/messages.py), field for field: nested models
become structs, lists lists, dicts maps, times UTC microsecond timestamps, enums strings.
A contract change is therefore a schema change of the archive, versioned by the records'
`schema_version` column. Three columns come from Kafka: `kafka_partition`,
`kafka_offset`, `kafka_timestamp` (the broker's). A contract with an `event_time` keeps
its UTC offset too, in `event_time_utc_offset_s`: feature maths reads the payment's local
hour, which a UTC timestamp alone has lost. Keys are not kept: every contract carries the
id it is keyed by.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import Enum
from typing import Any, Literal

import pyarrow as pa
from pydantic import AwareDatetime, BaseModel

from fraudstream.contracts import Contract

KAFKA_COLUMNS = (
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
    pa.field("kafka_timestamp", pa.timestamp("ms", tz="UTC")),
)
OFFSET_WIDTH = 10
_FILE = re.compile(r"^(?P<topic>.+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.parquet$")
LOCAL_TIME_FIELD = "event_time"  # its UTC offset is kept beside it (see the docstring)
LOCAL_OFFSET_COLUMN = f"{LOCAL_TIME_FIELD}_utc_offset_s"
# The field whose day names a record's date directory; without one, the broker timestamp.
TIME_FIELDS = ("labelled_at", "event_time", "created_at", "triggered_at", "at")


@dataclass(frozen=True)
class FileName:
    """One archive file's identity: topic, Kafka partition and first offset."""

    topic: str
    partition: int
    first_offset: int

    def __str__(self) -> str:
        return f"{self.topic}+{self.partition}+{self.first_offset:0{OFFSET_WIDTH}d}.parquet"

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The identity in a file's base name, or None for files that are not ours."""
        found = _FILE.match(name)
        if found is None:
            return None
        return cls(found["topic"], int(found["partition"]), int(found["offset"]))


def file_path(root: str, topic: str, day: date, name: FileName) -> str:
    """Where a file of `topic` for event date `day` lives under `root`."""
    return f"{root.rstrip('/')}/{topic}/date={day.isoformat()}/{name}"


def time_field(contract: type[Contract]) -> str | None:
    """The contract's event-time field (it names the date directory), if it has one."""
    return next((name for name in TIME_FIELDS if name in contract.model_fields), None)


def schema(contract: type[Contract]) -> pa.Schema:
    """The Arrow schema of a topic's archive files: Kafka columns, then the contract's."""
    extra = [pa.field(LOCAL_OFFSET_COLUMN, pa.int32())] if _keeps_offset(contract) else []
    return pa.schema([*KAFKA_COLUMNS, *_model_fields(contract), *extra])


def _keeps_offset(contract: type[Contract]) -> bool:
    return LOCAL_TIME_FIELD in contract.model_fields


def table(
    contract: type[Contract],
    messages: Sequence[BaseModel],
    partitions: Sequence[int],
    offsets: Sequence[int],
    timestamps_ms: Sequence[int | None],
) -> pa.Table:
    """Rows of one file: validated messages with their Kafka coordinates."""
    columns: dict[str, list[Any]] = {
        "kafka_partition": list(partitions),
        "kafka_offset": list(offsets),
        "kafka_timestamp": [
            None if ts is None or ts < 0 else datetime.fromtimestamp(ts / 1000, UTC)
            for ts in timestamps_ms
        ],
    }
    dumped = [m.model_dump(mode="python") for m in messages]
    for name in contract.model_fields:
        columns[name] = [row[name] for row in dumped]
    if _keeps_offset(contract):
        columns[LOCAL_OFFSET_COLUMN] = [utc_offset_s(row[LOCAL_TIME_FIELD]) for row in dumped]
    return pa.Table.from_pydict(columns, schema=schema(contract))


def utc_offset_s(when: datetime | None) -> int | None:
    """Seconds east of UTC of an aware time (None for no time)."""
    offset = when.utcoffset() if when is not None else None
    return None if offset is None else int(offset.total_seconds())


def _model_fields(model: type[BaseModel]) -> list[pa.Field]:
    fields = []
    for name, info in model.model_fields.items():
        arrow_type, optional = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=optional or not info.is_required()))
    return fields


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:  # noqa: PLR0911 - one per kind
    """(Arrow type, nullable) for a contract field's annotation."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"no archive type for the union {annotation}")
        return _arrow_type(members[0])[0], True
    if origin is Literal:
        return _arrow_type(type(args[0]))
    if origin is list:
        return pa.list_(_arrow_type(args[0])[0]), False
    if origin is dict:
        return pa.map_(_arrow_type(args[0])[0], _arrow_type(args[1])[0]), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(_model_fields(annotation)), False
    return _scalar_type(annotation), False


_SCALARS: tuple[tuple[type, pa.DataType], ...] = (
    (Enum, pa.string()),
    (str, pa.string()),
    (bool, pa.bool_()),  # before int: bool is an int
    (int, pa.int64()),
    (float, pa.float64()),
    (datetime, pa.timestamp("us", tz="UTC")),
)


def _scalar_type(annotation: Any) -> pa.DataType:
    if annotation is AwareDatetime:
        return pa.timestamp("us", tz="UTC")
    if isinstance(annotation, type):
        for kind, arrow_type in _SCALARS:
            if issubclass(annotation, kind):
                return arrow_type
    raise TypeError(f"no archive type for {annotation!r}")
