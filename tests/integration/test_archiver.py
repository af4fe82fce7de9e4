"""The archiver against the real broker: every record once in the Parquet archive, across
kill -9 at random moments, with the layout readable by a plain pyarrow dataset."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import Label, LabelSource, Verdict, encode
from fraudstream.history import layout
from fraudstream.history.archiver import PROGRESS_DIR, ArchiveStorage
from fraudstream.history.query import Archive as QueryArchive
from fraudstream.history.query import TopicNames
from fraudstream.localstack.stack import Endpoints
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.scorer_support import deployment_env, settings_from_env

pytestmark = pytest.mark.integration


def _archiver_env(endpoints: Endpoints, admin: AdminClient, tmp_path: Path) -> dict[str, str]:
    env = deployment_env(endpoints, tmp_path / "registry", admin)
    return {
        **env,
        "FRAUD_ARCHIVE_URL": str(tmp_path / "archive"),
        "FRAUD_ARCHIVE_GROUP": f"archiver-{env['FRAUD_REDIS_PREFIX']}",
        "FRAUD_ARCHIVE_FLUSH_S": "0.3",
        "FRAUD_ARCHIVE_FLUSH_ROWS": "150",
    }


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "fraudstream.history.archiver"],
            env={**os.environ, **env}, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


Records = list[tuple[str, bytes, bytes]]


def _records(env: dict[str, str], n: int, seed: int) -> tuple[Records, dict[str, list[str]]]:
    """(topic, key, value) to produce: transactions over two days, a label for every tenth,
    and a few records that fail their contract; and the valid ones' ids per topic."""
    settings = settings_from_env(env)
    txs = simulated_history(SimulationConfig(seed=seed, n_transactions=n, days=2)).transactions
    out: Records = []
    ids: dict[str, list[str]] = {settings.topic_transactions: [], settings.topic_labels: []}
    for i, tx in enumerate(txs):
        out.append((settings.topic_transactions, tx.card_token.encode(), encode(tx)))
        ids[settings.topic_transactions].append(tx.transaction_id)
        if i % 10 == 0:
            label = Label(
                transaction_id=tx.transaction_id,
                verdict=Verdict.FRAUD if i % 20 else Verdict.LEGIT,
                source=LabelSource.CHARGEBACK, labelled_at=tx.event_time + timedelta(days=1),
                card_token=tx.card_token, merchant_id=tx.merchant_id, event_time=tx.event_time,
            )  # fmt: skip
            out.append((settings.topic_labels, tx.transaction_id.encode(), encode(label)))
            ids[settings.topic_labels].append(tx.transaction_id)
        if i % 997 == 0:
            out.append((settings.topic_transactions, b"k", b'{"not": "a transaction"}'))
    return out, ids


def _produce(producer: Producer, records: Records, rate: float) -> None:
    start = time.monotonic()
    for i, (topic, key, value) in enumerate(records):
        producer.produce(topic, value, key=key)
        producer.poll(0)
        if (ahead := start + i / rate - time.monotonic()) > 0.005:
            time.sleep(ahead)  # paces the feed (not a synchronisation)
    assert producer.flush(30) == 0


def _archived(root: Path) -> dict[str, list[tuple[int, int, str]]]:
    """(partition, offset, transaction id) of every archived row, per topic directory."""
    rows: dict[str, list[tuple[int, int, str]]] = {}
    if not root.exists():
        return rows
    for topic_dir in sorted(p for p in root.iterdir() if p.name != PROGRESS_DIR):
        dataset = ds.dataset(topic_dir, format="parquet", partitioning="hive")
        if not dataset.files:  # only a file being written so far
            continue
        data = dataset.to_table(columns=["kafka_partition", "kafka_offset", "transaction_id"])
        rows[topic_dir.name] = list(
            zip(*(data[c].to_pylist() for c in data.column_names), strict=True)
        )
    return rows


def _await(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes], log: Path, started: int) -> None:
    """SIGTERM once the `started`-th archiver of this log has its partitions (a SIGTERM
    during start-up ends the process by the default action, before it has written)."""
    _await(lambda: log.read_text().count("INFO __main__: assigned") >= started, 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, log.read_text()[-3000:]


def _transactional(make_producer: Callable[..., Producer]) -> Producer:
    return make_producer({"transactional.id": f"archiver-test-{uuid.uuid4().hex[:8]}"})


def _records_archived(
    env: dict[str, str], root: Path, log: Path, producer: Producer, seed: int
) -> tuple[Records, dict[str, list[str]]]:
    """600 transactions' records produced at once, then archived by one archiver run."""
    records, ids = _records(env, 600, seed=seed)
    producer.init_transactions(30)  # as the scorer writes: commit markers take offsets
    for chunk in range(0, len(records), 50):
        producer.begin_transaction()
        _produce(producer, records[chunk : chunk + 50], rate=100_000.0)
        producer.commit_transaction(30)
    proc = _start(env, log)
    valid = sum(len(v) for v in ids.values())
    _await(lambda: sum(len(v) for v in _archived(root).values()) >= valid, 90)
    _stop(proc, log, started=1)
    assert " ERROR " not in log.read_text(), log.read_text()[-3000:]
    return records, ids


def test_kill_minus_nine_archives_every_record_exactly_once(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    env = _archiver_env(endpoints, admin, tmp_path)
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    seed = int(os.environ.get("FRAUD_TEST_SEED", "31"))  # load_tests/archiver_stress.py
    records, ids = _records(env, 4000, seed=seed)
    valid = sum(len(v) for v in ids.values())
    # ~22 s of traffic: each kill waits ~7 s for the group (the 6 s session) and new rows.
    feeder = threading.Thread(target=_produce, args=(make_producer(), records, 200.0))
    rng = random.Random(seed)
    proc = _start(env, log)
    try:
        feeder.start()

        def count() -> int:
            return sum(len(v) for v in _archived(root).values())

        for _kill in range(3):
            archived = count()
            # New rows since the last start (or all of them, if the traffic ran out first).
            _await(lambda: count() > archived or count() >= valid, 60)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment: mid-flush or between
            proc.kill()
            proc.wait(10)
            proc = _start(env, log)
        feeder.join(60)
        _await(lambda: count() >= valid, 90)
        _stop(proc, log, started=4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    rows = _archived(root)
    for topic, topic_rows in rows.items():
        coordinates = [(p, o) for p, o, _id in topic_rows]
        assert len(coordinates) == len(set(coordinates)), f"{topic}: a record archived twice"
    assert set(rows) == set(ids)
    for topic, want in ids.items():
        got = sorted(tx_id for _p, _o, tx_id in rows[topic])
        assert got == sorted(want), f"{topic}: {len(got)} archived, {len(want)} produced"
    assert "not archived: " in log.read_text()  # the invalid records, named with offsets


def test_a_flush_that_never_committed_is_discarded_and_written_again(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    """Data files past the progress file are a crash's leftovers: deleted at assignment."""
    env = _archiver_env(endpoints, admin, tmp_path)
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    _records_archived(env, root, log, _transactional(make_producer), seed=32)
    before = _archived(root)
    topic = settings_from_env(env).topic_transactions
    # A crash after a flush's data files, before its progress: a file at the progress.
    source = next((root / topic).glob("date=*/*.parquet"))
    name = layout.FileName.parse(source.name)
    assert name is not None
    progress = (root / PROGRESS_DIR / f"{topic}+{name.partition}.json").read_bytes()
    next_offset = int(progress.split(b'"next_offset":')[1].split(b",")[0])
    orphan = source.parent / str(layout.FileName(topic, name.partition, next_offset))
    shutil.copy(source, orphan)
    (source.parent / f".{orphan.name}.tmp").write_bytes(b"half a file")
    proc = _start(env, log)
    _await(lambda: "did not commit" in log.read_text(), 60)
    _stop(proc, log, started=2)
    assert not orphan.exists()
    assert not (source.parent / f".{orphan.name}.tmp").exists()
    assert _archived(root) == before


def test_the_archive_opens_a_relative_directory_and_a_file_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = ArchiveStorage("archive")  # the default: pyarrow refuses it as a URI
    relative.set_progress("t", 0, 42)
    assert (tmp_path / "archive" / PROGRESS_DIR / "t+0.json").exists()
    assert ArchiveStorage(f"file://{tmp_path}/archive").progress("t", 0) == 42


def test_the_archivers_files_answer_the_history_queries(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    """What the archiver writes is what `fraudstream.history.query` reads: each transaction
    once, with the label known as of a time and none given later."""
    env = _archiver_env(endpoints, admin, tmp_path)
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    records, ids = _records_archived(env, root, log, _transactional(make_producer), seed=33)
    settings = settings_from_env(env)
    names = TopicNames(settings.topic_transactions, settings.topic_decisions, settings.topic_labels)
    labels = [Label.model_validate_json(v) for t, _k, v in records if t == settings.topic_labels]
    as_of = sorted(label.labelled_at for label in labels)[len(labels) // 2]
    with QueryArchive(str(root), names) as archive:
        history = archive.labelled_history(datetime(2000, 1, 1, tzinfo=UTC),
                                           datetime(2100, 1, 1, tzinfo=UTC), as_of)  # fmt: skip
    assert sorted(history["transaction_id"].to_pylist()) == sorted(ids[settings.topic_transactions])
    known = {
        label.transaction_id: label.verdict == Verdict.FRAUD
        for label in labels
        if label.labelled_at <= as_of
    }
    got = {
        tx_id: is_fraud
        for tx_id, is_fraud in zip(history["transaction_id"].to_pylist(),
                                   history["is_fraud"].to_pylist(), strict=True)
        if is_fraud is not None
    }  # fmt: skip
    assert got == known
    assert 0 < len(known) < len(labels)
