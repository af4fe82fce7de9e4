"""Write a simulation to disk: Parquet (fast, typed) or JSONL (one contract message a line).

`transactions.<ext>` holds the transactions table; in JSONL each line is the contract
JSON of one `Transaction` (features nested under `features`) plus the top-level
ground-truth keys `is_fraud` and `scenario`, which readers strip before validating.
`labels.<ext>` holds the label stream; each JSONL line is exactly a `Label` message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraudstream.simulator.config import SimulatorError
from fraudstream.simulator.simulate import Simulation
from fraudstream.simulator.tables import FEATURE_PREFIX

Format = Literal["jsonl", "parquet"]
_FIRST_KEY = b'{"schema_version":'


def write(sim: Simulation, out_dir: Path, fmt: Format) -> tuple[Path, Path]:
    """Write `transactions.<fmt>` and `labels.<fmt>` into `out_dir`; returns both paths."""
    if fmt not in get_args(Format):
        raise SimulatorError(f"unknown output format {fmt!r}; use one of {get_args(Format)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / f"transactions.{fmt}", out_dir / f"labels.{fmt}")
    for table, path in zip((sim.transactions, sim.labels), paths, strict=True):
        if fmt == "parquet":
            pq.write_table(table, path, compression="zstd")
        else:
            with path.open("wb") as sink:
                sink.writelines(jsonl_lines(table))
    return paths


def jsonl_lines(table: pa.Table, batch_rows: int = 65_536) -> Iterator[bytes]:
    """Newline-terminated JSON of the rows, one chunk of lines per batch.

    Timestamps read like pydantic writes them (ISO 8601, `Z`), `features.<name>` columns
    become a nested `features` object. Each batch is serialised in one `orjson` call, as
    a JSON array, then cut into lines before each row's first key: a quote cannot appear
    unescaped inside a JSON string, so `},{"schema_version":` only occurs between rows.
    """
    view = _json_view(table)
    if view.column_names[:1] != ["schema_version"]:
        raise SimulatorError("JSONL rows must start with schema_version")
    for batch in view.to_batches(max_chunksize=batch_rows):
        if batch.num_rows:
            body = orjson.dumps(batch.to_pylist())[1:-1]
            yield body.replace(b"}," + _FIRST_KEY, b"}\n" + _FIRST_KEY) + b"\n"


def _json_view(table: pa.Table) -> pa.Table:
    """`table` with timestamps as ISO strings and features gathered into a struct column."""
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    features = [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
    for name in table.column_names:
        column = table[name]
        if pa.types.is_timestamp(column.type):
            columns[name] = _iso(column)
        elif name == (features[:1] or [None])[0]:
            arrays = [table[c].combine_chunks() for c in features]
            names = [c[len(FEATURE_PREFIX) :] for c in features]
            columns["features"] = pa.StructArray.from_arrays(arrays, names=names)
        elif name not in features:
            columns[name] = column
    return pa.table(columns)


def _iso(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """UTC timestamps as pydantic prints them: `2026-01-05T10:00:00Z` or `...00.123000Z`."""
    text = column.cast(pa.timestamp("us")).cast(pa.string())  # "2026-01-05 10:00:00.000000"
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(pc.replace_substring(text, ".000000", ""), "Z", "")
