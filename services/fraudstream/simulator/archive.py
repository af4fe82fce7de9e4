"""Simulated history as the archiver would have written it (benchmarks, tests, notebooks).

Transactions are keyed by card as producers key them, so each card lands in one Kafka
partition (crc32 of the token, as a stand-in for the producer's partitioner), with
offsets in event-time order and the broker timestamp at the event time; labels go to
their own topic the same way, keyed by transaction id, stamped at `labelled_at`.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudstream.contracts import Label, Transaction
from fraudstream.history import layout
from fraudstream.simulator.simulate import Simulation

FEATURE_PREFIX = "features."


def archive_tables(sim: Simulation, partitions: int = 3) -> tuple[pa.Table, pa.Table]:
    """(transactions, labels) in the archive's schemas; the truth columns are dropped."""
    tx = sim.transactions.sort_by("event_time")
    features = [n for n in tx.column_names if n.startswith(FEATURE_PREFIX)]
    tx = tx.append_column("features", _feature_maps(tx, features))
    tx = _with_kafka(tx, "card_token", "event_time", partitions)
    tx = tx.append_column(layout.LOCAL_OFFSET_COLUMN, pa.array(np.zeros(len(tx), np.int32)))
    labels = _with_kafka(sim.labels.sort_by("labelled_at"), "transaction_id", "labelled_at",
                         partitions)  # fmt: skip
    return _conform(tx, Transaction), _conform(labels, Label)


def write_topic(root: Path, topic: str, table: pa.Table) -> int:
    """Write `table` under `root` in the archive layout (a file per partition and date);
    returns the number of files."""
    time_field = "event_time" if "event_time" in table.column_names else "kafka_timestamp"
    time_field = "labelled_at" if "labelled_at" in table.column_names else time_field
    dates = pc.strftime(table[time_field], "%Y-%m-%d")
    files = 0
    for date in pc.unique(dates).to_pylist():
        day = table.filter(pc.equal(dates, date))
        for partition in pc.unique(day["kafka_partition"]).to_pylist():
            part = day.filter(pc.equal(day["kafka_partition"], partition))
            name = layout.FileName(topic, partition, int(pc.min(part["kafka_offset"]).as_py()))
            path = Path(root) / topic / f"date={date}" / str(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, path)
            files += 1
    return files


def _feature_maps(tx: pa.Table, names: list[str]) -> pa.Array:
    columns = [tx[n].to_pylist() for n in names]
    keys = [n.removeprefix(FEATURE_PREFIX) for n in names]
    maps = [
        {k: v for k, v in zip(keys, values, strict=True) if v is not None} or None
        for values in zip(*columns, strict=True)
    ] if names else [None] * len(tx)  # fmt: skip
    return pa.array([list(m.items()) if m else None for m in maps],
                    type=pa.map_(pa.string(), pa.float64()))  # fmt: skip


def _with_kafka(table: pa.Table, key: str, at: str, partitions: int) -> pa.Table:
    """Kafka columns: partition by the key's crc32, offsets in table order per partition."""
    partition = np.array([zlib.crc32(k.encode()) % partitions for k in table[key].to_pylist()],
                         dtype=np.int32)  # fmt: skip
    offset = np.zeros(len(partition), dtype=np.int64)
    for p in range(partitions):
        mine = partition == p
        offset[mine] = np.arange(int(mine.sum()))
    stamp = pc.cast(table[at], pa.timestamp("ms", tz="UTC"), safe=False)
    return (table.append_column("kafka_partition", pa.array(partition))
            .append_column("kafka_offset", pa.array(offset))
            .append_column("kafka_timestamp", stamp))  # fmt: skip


def _conform(table: pa.Table, contract: type[Transaction] | type[Label]) -> pa.Table:
    schema = layout.schema(contract)
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names
        else pa.nulls(len(table), f.type)
        for f in schema
    ]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=schema)
