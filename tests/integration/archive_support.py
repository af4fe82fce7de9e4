"""Shared set-up for tests that run the archiver: its environment, process and files."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pyarrow.dataset as ds
from confluent_kafka.admin import AdminClient

from fraudstream.history.archiver import PROGRESS_DIR
from fraudstream.localstack.stack import Endpoints
from tests.integration.scorer_support import deployment_env, start_module
from tests.waiting import await_condition


def archiver_env(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    registry: Path | None = None,
    **extra: str,
) -> dict[str, str]:
    """A deployment (scorer_support.deployment_env) with an archiver flushing often."""
    env = deployment_env(endpoints, registry or tmp_path / "registry", admin, **extra)
    return {
        **env,
        "FRAUD_ARCHIVE_URL": str(tmp_path / "archive"),
        "FRAUD_ARCHIVE_GROUP": f"archiver-{env['FRAUD_REDIS_PREFIX']}",
        "FRAUD_ARCHIVE_FLUSH_S": "0.3",
        "FRAUD_ARCHIVE_FLUSH_ROWS": "150",
    }


def start_archiver(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return start_module("fraudstream.history.archiver", env, log)


def archived_rows(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """(partition, offset, transaction id) of every archived row, per topic directory
    (the id is the review case's `transaction.transaction_id` on the review topic)."""
    rows: dict[str, list[tuple[int, int, str]]] = {}
    if not root.exists():
        return rows
    for topic_dir in sorted(p for p in root.iterdir() if p.name != PROGRESS_DIR):
        dataset = ds.dataset(topic_dir, format="parquet", partitioning="hive")
        if not dataset.files:  # only a file being written so far
            continue
        nested = "transaction_id" not in dataset.schema.names
        ids = ds.field("transaction", "transaction_id") if nested else ds.field("transaction_id")
        data = dataset.to_table(
            columns={"kafka_partition": ds.field("kafka_partition"),
                     "kafka_offset": ds.field("kafka_offset"), "transaction_id": ids}
        )  # fmt: skip
        rows[topic_dir.name] = list(
            zip(*(data[c].to_pylist() for c in data.column_names), strict=True)
        )
    return rows


def stop_archiver(proc: subprocess.Popen[bytes], log: Path, started: int) -> None:
    """SIGTERM once the `started`-th archiver of this log has its partitions (a SIGTERM
    during start-up ends the process by the default action, before it has written)."""
    await_condition(lambda: log.read_text().count("INFO __main__: assigned") >= started, 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]
