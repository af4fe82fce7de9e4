"""Labelled history for training: files in the contract format, validated like live input.

Supported: JSONL (one Transaction JSON per line), Parquet and CSV (one column per
Transaction field, producer features as `features.<name>` columns), each with a label
column (default `is_fraud`: true/false, 1/0 or fraud/legit). Every row goes through the
same strict validation as the scorer's input; invalid rows are counted by reason and
skipped, and too many of them stop the load with a clear error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import csv

from fraudstream.contracts import Label, LabelSource, Rejection, Transaction, Verdict, decode
from fraudstream.errors import ContractError
from fraudstream.features.compute import Event
from fraudstream.history.rows import (
    archived_columns,
    archived_events,
    archived_transactions,
    transaction_table,
)

TEXT_FIELDS = (
    "transaction_id", "card_token", "card_bin", "customer_id", "merchant_id", "mcc",
    "currency", "channel", "country", "device_id", "ip",
)  # fmt: skip
OPTIONAL_FIELDS = ("latitude", "longitude", "device_id", "ip", "features")
EXTRA_COLUMNS = ("scenario",)  # simulator bookkeeping, never a model input
CHUNK_ROWS = 50_000  # rows turned into Python values at a time when replaying features
_TRUE = {"1", "true", "fraud", "yes"}
_FALSE = {"0", "false", "legit", "no"}


@dataclass
class LabelledHistory:
    """Validated, time-ordered transactions with their labels. The transactions are held
    as columns in the archive's layout (`history.layout`), about 200 bytes a row where
    `Transaction` objects take 3 KB; `events` feeds the feature pipeline from them."""

    table: pa.Table
    y: np.ndarray  # 1 = fraud
    labels: list[Label] = field(default_factory=list)  # when each label became known
    rejected: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_transactions(
        cls, txs: Sequence[Transaction], y: np.ndarray, labels: Iterable[Label] = (),
        rejected: Counter[str] | None = None,
    ) -> LabelledHistory:  # fmt: skip
        return cls(transaction_table(txs), y, list(labels), rejected or Counter())

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @cached_property
    def transactions(self) -> list[Transaction]:
        """The rows as `Transaction`s (for tools and tests: training reads the columns)."""
        return archived_transactions(self.table)

    def event_micros(self) -> np.ndarray:
        """Each row's event time, in microseconds since the epoch (UTC)."""
        return np.asarray(pc.cast(self.table["event_time"], pa.int64()).to_numpy(), np.int64)

    def events(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[Event]]:
        """The rows as the feature pipeline's `Event`s, `chunk_rows` at a time (only one
        chunk's Python values are alive at once)."""
        for at in range(0, self.table.num_rows, chunk_rows):
            rows = self.table.slice(at, chunk_rows)
            yield archived_events(rows, archived_columns(rows))


def load_labelled(
    path: Path,
    *,
    label_column: str = "is_fraud",
    labels_path: Path | None = None,
    label_delay: timedelta = timedelta(days=30),
    max_message_bytes: int = 64 * 1024,
    max_invalid_share: float = 0.01,
) -> LabelledHistory:
    """Read, validate and sort a labelled file.

    Label timing: with `labels_path` (Label JSONL/Parquet, e.g. the simulator's chargeback
    stream) label-derived features see each label from its `labelled_at`; without it, a
    fraud row's label is assumed known `label_delay` after the payment.
    """
    rows = list(_read_rows(path))
    if not rows:
        raise ContractError(f"{path} holds no rows")
    accepted: list[tuple[Transaction, int]] = []
    rejected: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for row in rows:
        if label_column not in row:
            raise ContractError(f"{path}: label column {label_column!r} missing")
        verdict = _verdict(row.pop(label_column))
        for extra in EXTRA_COLUMNS:
            row.pop(extra, None)
        result = decode(Transaction, orjson.dumps(_nest(row)), max_message_bytes)
        if isinstance(result, Rejection):
            rejected[result.reason.value] += 1
            examples.setdefault(result.reason.value, result.detail)
        elif verdict is None:
            rejected["bad_label"] += 1
            examples.setdefault(
                "bad_label", f"{label_column} must be 0/1, true/false or fraud/legit"
            )
        else:
            accepted.append((result, verdict))
    _check_rejections(path, rejected, examples, len(rows), max_invalid_share)
    accepted.sort(key=lambda pair: pair[0].event_time)
    txs = [tx for tx, _ in accepted]
    y = np.fromiter((v for _, v in accepted), dtype=np.int8, count=len(accepted))
    labels = read_labels(labels_path) if labels_path else list(_delayed_labels(txs, y, label_delay))
    return LabelledHistory.from_transactions(txs, y, labels, rejected)


def read_labels(path: Path) -> list[Label]:
    """Label messages from JSONL or Parquet (invalid ones are an error: labels are ours)."""
    labels = []
    for row in _read_rows(path):
        try:
            labels.append(Label.model_validate_json(orjson.dumps(row)))
        except ValueError as exc:
            raise ContractError(
                f"{path}: invalid label {row.get('transaction_id')}: {exc}"
            ) from exc
    return labels


def _delayed_labels(txs: list[Transaction], y: np.ndarray, delay: timedelta) -> Iterator[Label]:
    for tx, is_fraud in zip(txs, y, strict=True):
        if is_fraud:
            yield Label(
                transaction_id=tx.transaction_id, verdict=Verdict.FRAUD,
                source=LabelSource.CHARGEBACK, labelled_at=tx.event_time + delay,
                merchant_id=tx.merchant_id, card_token=tx.card_token, event_time=tx.event_time,
                device_id=tx.device_id, ip=tx.ip,
            )  # fmt: skip


def _check_rejections(
    path: Path, rejected: Counter[str], examples: dict[str, str], total: int, limit: float
) -> None:
    bad = sum(rejected.values())
    if bad > limit * total:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in rejected.most_common())
        first = "; ".join(f"{reason}: {examples[reason]}" for reason, _ in rejected.most_common(2))
        raise ContractError(
            f"{path}: {bad} of {total} rows invalid ({reasons}); more than "
            f"{limit:.1%} allowed - fix the file, or accept that share with --max-invalid "
            f"{min(1.0, bad / total + 0.001):.3f} (every skipped row is counted by reason). "
            f"For example: {first}"
        )


def _verdict(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return int(value) if value in (0, 1) else None
    text = str(value).strip().lower()
    return 1 if text in _TRUE else 0 if text in _FALSE else None


def _nest(row: dict[str, Any]) -> dict[str, Any]:
    """Flat columns back to the contract shape: `features.x` columns into `features`."""
    features = {k.removeprefix("features."): v for k, v in row.items() if k.startswith("features.")}
    out = {k: v for k, v in row.items() if not k.startswith("features.")}
    present = {
        k: float(v) for k, v in features.items() if v is not None and not math.isnan(float(v))
    }
    if features:
        out["features"] = present or None
    for name in OPTIONAL_FIELDS:
        value = out.get(name)
        if value == "" or (isinstance(value, float) and math.isnan(value)):
            out[name] = None
    return out


def _read_rows(path: Path) -> Iterable[dict[str, Any]]:
    suffix = path.suffix.lower()
    if not path.exists():
        raise ContractError(f"{path} does not exist")
    if suffix in {".jsonl", ".ndjson"}:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise ContractError(f"{path}:{number}: not JSON: {exc}") from exc
        return
    if suffix == ".parquet":
        yield from _microseconds(pq.read_table(path)).to_pylist()
        return
    if suffix == ".csv":
        # Ids that look numeric (MCC, BIN, numeric customer ids) must stay strings.
        text = {name: pa.string() for name in TEXT_FIELDS}
        options = csv.ConvertOptions(strings_can_be_null=True, column_types=text)
        yield from _microseconds(csv.read_csv(path, convert_options=options)).to_pylist()
        return
    raise ContractError(f"{path}: unsupported format {suffix!r}; use .jsonl, .parquet or .csv")


def _microseconds(table: pa.Table) -> pa.Table:
    """Nanosecond timestamps become microsecond ones (plain datetimes, like the contract)."""
    for index, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type) and column.type.unit == "ns":
            wanted = pa.timestamp("us", tz=column.type.tz)
            table = table.set_column(index, column.name, table[column.name].cast(wanted))
    return table
