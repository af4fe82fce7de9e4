"""Archived transaction rows (the archive's layout, `layout.py`) as Python values,
`Transaction`s or the feature pipeline's `Event`s, and back: the one conversion the
backtester, `fraudctl evaluate` and training share. Columns are converted a column at a
time (numpy, not per-row pydantic), which is what keeps training near 1 KB per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.contracts import Channel, Transaction
from fraudstream.features.compute import Event
from fraudstream.history import layout

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TX_FIELDS = tuple(name for name in Transaction.model_fields if name != "schema_version")


def transaction_table(txs: Sequence[Transaction]) -> pa.Table:
    """`txs` in the archive's layout, as if read from one partition in this order (offset
    = position, broker time = event time)."""
    return layout.table(Transaction, txs, [0] * len(txs), list(range(len(txs))),
                        [_ms(tx.event_time) for tx in txs])  # fmt: skip


def _ms(when: datetime) -> int:
    return (when - EPOCH) // timedelta(milliseconds=1)


_ZONES: dict[int, timezone] = {}


def _zone(offset_s: int | None) -> timezone:
    if not offset_s:
        return UTC
    zone = _ZONES.get(offset_s)
    if zone is None:
        zone = _ZONES[offset_s] = timezone(timedelta(seconds=offset_s))
    return zone


def archived_columns(rows: pa.Table) -> dict[str, list[Any]]:
    """The transaction fields of archived rows as Python values: `event_time` as aware
    datetimes in the producer's zone, `features` as dicts, enums as their values."""
    columns = {name: _values(rows[name]) for name in TX_FIELDS if name not in _DERIVED}
    micros = _event_micros(rows)
    offsets = _values(rows[layout.LOCAL_OFFSET_COLUMN])
    columns["event_time"] = [
        (EPOCH + timedelta(microseconds=us)).astimezone(_zone(offset)) if offset
        else EPOCH + timedelta(microseconds=us)
        for us, offset in zip(micros, offsets, strict=True)
    ]  # fmt: skip
    columns["features"] = _maps(rows["features"])
    return columns


def archived_transactions(rows: pa.Table) -> list[Transaction]:
    """Archived rows back as `Transaction`s (tools, tests and the training baseline; the
    replay itself works on columns). Built without validation: the scorer validated each
    one before it was decided and archived."""
    columns = archived_columns(rows)
    channels = {c.value: c for c in Channel}
    columns["channel"] = [channels[c] for c in columns["channel"]]
    names = list(columns)
    rows_of = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(),
                                                                        strict=True)]  # fmt: skip
    if not rows_of:
        return []
    # model_copy(update=...) of one constructed row: half of model_construct's cost per row.
    template = Transaction.model_construct(**rows_of[0])
    return [template.model_copy(update=row) for row in rows_of]


def archived_events(rows: pa.Table, columns: dict[str, list[Any]]) -> list[Event]:
    """The feature pipeline's `Event`s of archived rows (their `archived_columns`), equal
    field for field to `Event.from_transaction` of the same transactions (a unit test
    holds them to it) at a fraction of the cost: no `Transaction` is built."""
    micros = np.asarray(_event_micros(rows), dtype=np.int64)
    offsets = np.array([o or 0 for o in _values(rows[layout.LOCAL_OFFSET_COLUMN])], np.int64)
    day_seconds = (micros // 1_000_000 + offsets) % 86_400
    hours, minutes = (day_seconds // 3600).tolist(), (day_seconds % 3600 // 60).tolist()
    timestamps = (micros.astype(np.float64) / 1e6).tolist()
    return [
        Event(ts, hour + minute / 60.0, card, merchant, device, ip, amount, country, lat, lon,
              mcc, channel, present, producer)
        for ts, hour, minute, card, merchant, device, ip, amount, country, lat, lon, mcc,
        channel, present, producer in zip(
            timestamps, hours, minutes, columns["card_token"], columns["merchant_id"],
            columns["device_id"], columns["ip"], columns["amount"], columns["country"],
            columns["latitude"], columns["longitude"], columns["mcc"], columns["channel"],
            columns["card_present"], columns["features"], strict=True,
        )
    ]  # fmt: skip


def _event_micros(rows: pa.Table) -> list[int]:
    micros: list[int] = pc.cast(rows["event_time"], pa.int64()).to_numpy().tolist()
    return micros


_DERIVED = frozenset({"event_time", "features"})  # converted by `archived_columns`


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column as Python values, nulls as None (numpy's conversion is ~10x to_pylist's)."""
    if pa.types.is_string(column.type) or column.null_count == 0:
        values: list[Any] = column.to_numpy(zero_copy_only=False).tolist()
        return values
    return list(column.to_pylist())


def _maps(column: pa.ChunkedArray) -> list[dict[str, float] | None]:
    """A map column as dicts (None where null)."""
    out: list[dict[str, float] | None] = []
    for chunk in column.chunks:
        offsets = chunk.offsets.to_numpy().tolist()  # into the whole child arrays
        keys = chunk.keys.to_numpy(zero_copy_only=False).tolist()
        items = chunk.items.to_numpy(zero_copy_only=False).tolist()
        valid = chunk.is_valid().to_numpy(zero_copy_only=False).tolist()
        out += [
            dict(zip(keys[offsets[i] : offsets[i + 1]], items[offsets[i] : offsets[i + 1]],
                     strict=True)) if valid[i] else None
            for i in range(len(chunk))
        ]  # fmt: skip
    return out
