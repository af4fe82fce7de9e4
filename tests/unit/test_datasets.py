"""Labelled training files in every supported format validate like live input."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import csv

from fraudstream.contracts import Transaction
from fraudstream.datasets import load_labelled
from fraudstream.errors import ContractError
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import FeaturePipeline, replay, replay_events
from fraudstream.features.spec import FeatureConfig
from tests.factories import NOW, transaction


def _rows(n: int = 20) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        tx = transaction(transaction_id=f"tx-{i}", event_time=NOW - timedelta(minutes=i))
        row = tx.model_dump(mode="json")
        row["is_fraud"] = i % 5 == 0
        rows.append(row)
    return rows


def _flat(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for row in rows:
        features = row.pop("features") or {}
        flat.append({**row, **{f"features.{k}": v for k, v in features.items()}})
    return flat


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix in {".jsonl", ".txt"}:
        path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(_flat(rows)), path)
    else:
        csv.write_csv(pa.Table.from_pylist(_flat(rows)), path)
    return path


@pytest.mark.parametrize("name", ["data.jsonl", "data.parquet", "data.csv"])
def test_every_format_loads_sorted_with_labels(tmp_path: Path, name: str) -> None:
    history = load_labelled(_write(tmp_path / name, _rows()))
    assert len(history) == 20
    times = [tx.event_time for tx in history.transactions]
    assert times == sorted(times)
    assert history.y.sum() == 4
    first = history.transactions[0]
    assert isinstance(first, Transaction)
    assert first.features == {"producer_risk": 0.25}
    assert first.mcc == "5411"  # CSV must not turn it into a number
    fraud_ids = {
        tx.transaction_id for tx, y in zip(history.transactions, history.y, strict=True) if y
    }
    assert {label.transaction_id for label in history.labels} == fraud_ids
    for label in history.labels:
        assert label.event_time is not None
        assert label.labelled_at - label.event_time == timedelta(days=30)


def test_invalid_rows_are_counted_and_too_many_stop_the_load(tmp_path: Path) -> None:
    rows = _rows(200)
    rows[3]["amount"] = -1
    rows[4]["card_token"] = "4111111111111111"
    rows[5]["is_fraud"] = "maybe"
    history = load_labelled(_write(tmp_path / "d.jsonl", rows), max_invalid_share=0.05)
    assert len(history) == 197
    assert history.rejected == {"schema_violation": 1, "pan_detected": 1, "bad_label": 1}
    with pytest.raises(ContractError, match="3 of 200 rows invalid") as refused:
        load_labelled(tmp_path / "d.jsonl", max_invalid_share=0.01)
    assert "--max-invalid 0.016" in str(refused.value)  # the option that would accept them


def test_missing_label_column_and_unknown_format_are_clear(tmp_path: Path) -> None:
    rows = _rows(3)
    for row in rows:
        del row["is_fraud"]
    with pytest.raises(ContractError, match="label column 'is_fraud' missing"):
        load_labelled(_write(tmp_path / "d.jsonl", rows))
    with pytest.raises(ContractError, match="unsupported format"):
        load_labelled(_write(tmp_path / "d.txt", rows))


def test_history_columns_replay_as_the_transactions_would(tmp_path: Path) -> None:
    """Training reads the columns a chunk at a time; the rows, their events and the
    replayed features are those of the validated `Transaction`s."""
    history = load_labelled(_write(tmp_path / "data.jsonl", _rows(23)))
    txs = history.transactions
    assert [tx.transaction_id for tx in txs] == history.table["transaction_id"].to_pylist()
    events = [ev for chunk in history.events(chunk_rows=5) for ev in chunk]
    assert events == [Event.from_transaction(tx) for tx in txs]
    assert history.event_micros().tolist() == [
        round(tx.event_time.timestamp() * 1_000_000) for tx in txs
    ]
    pipeline = FeaturePipeline(FeatureConfig().resolve())
    filled = replay_events(pipeline, history.events(chunk_rows=5), history.labels, rows=23)
    joined = replay(pipeline, txs, history.labels)
    assert filled.tobytes() == joined.tobytes()
    with pytest.raises(ValueError, match="announced"):
        replay_events(pipeline, history.events(), history.labels, rows=24)
