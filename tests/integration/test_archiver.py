"""The archiver against the real broker: every record once in the Parquet archive, across
kill -9 at random moments, with the layout readable by a plain pyarrow dataset."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from fraudstream.contracts import Label, LabelSource, Transaction, Verdict, encode
from fraudstream.history import layout
from fraudstream.history.archiver import PROGRESS_DIR, ArchiveStorage
from fraudstream.history.query import Archive as QueryArchive
from fraudstream.history.query import TopicNames
from fraudstream.localstack.stack import Endpoints
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history
from tests.integration.archive_support import (
    archived_rows,
    archiver_env,
    start_archiver,
    stop_archiver,
)
from tests.integration.scorer_support import settings_from_env
from tests.waiting import await_condition

pytestmark = pytest.mark.integration


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
    proc = start_archiver(env, log)
    valid = sum(len(v) for v in ids.values())
    await_condition(lambda: sum(len(v) for v in archived_rows(root).values()) >= valid, 90)
    stop_archiver(proc, log, started=1)
    assert " ERROR " not in log.read_text(), log.read_text()[-3000:]
    return records, ids


def test_kill_minus_nine_archives_every_record_exactly_once(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    env = archiver_env(endpoints, admin, tmp_path)
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    seed = int(os.environ.get("FRAUD_TEST_SEED", "31"))  # load_tests/archiver_stress.py
    records, ids = _records(env, 4000, seed=seed)
    valid = sum(len(v) for v in ids.values())
    # ~22 s of traffic: each kill waits ~7 s for the group (the 6 s session) and new rows.
    feeder = threading.Thread(target=_produce, args=(make_producer(), records, 200.0))
    rng = random.Random(seed)
    proc = start_archiver(env, log)
    try:
        feeder.start()

        def count() -> int:
            return sum(len(v) for v in archived_rows(root).values())

        for _kill in range(3):
            archived = count()
            # New rows since the last start (or all of them, if the traffic ran out first).
            await_condition(lambda: count() > archived or count() >= valid, 60)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.6))  # a random moment: mid-flush or between
            proc.kill()
            proc.wait(10)
            proc = start_archiver(env, log)
        feeder.join(60)
        await_condition(lambda: count() >= valid, 90)
        stop_archiver(proc, log, started=4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    rows = archived_rows(root)
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
    env = archiver_env(endpoints, admin, tmp_path)
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    _records_archived(env, root, log, _transactional(make_producer), seed=32)
    before = archived_rows(root)
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
    proc = start_archiver(env, log)
    await_condition(lambda: "did not commit" in log.read_text(), 60)
    stop_archiver(proc, log, started=2)
    assert not orphan.exists()
    assert not (source.parent / f".{orphan.name}.tmp").exists()
    assert archived_rows(root) == before


def test_an_archive_started_at_the_end_holds_only_what_came_after(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    """FRAUD_ARCHIVE_START=latest (the drift demo's fresh archive): earlier records are not
    archived, later ones are, and a restart resumes from the progress, not the end."""
    env = {**archiver_env(endpoints, admin, tmp_path), "FRAUD_ARCHIVE_START": "latest"}
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    earlier, _ = _records(env, 300, seed=34)
    later, later_ids = _records(env, 300, seed=35)
    producer = make_producer()
    _produce(producer, earlier, rate=100_000.0)
    proc = start_archiver(env, log)
    await_condition(lambda: "INFO __main__: assigned" in log.read_text(), 60)
    _produce(producer, later, rate=100_000.0)
    valid = sum(len(v) for v in later_ids.values())
    await_condition(lambda: sum(len(v) for v in archived_rows(root).values()) >= valid, 90)
    stop_archiver(proc, log, started=1)
    topic = settings_from_env(env).topic_transactions
    assert sorted(r[2] for r in archived_rows(root)[topic]) == sorted(later_ids[topic])
    more, more_ids = _records(env, 100, seed=36)
    _produce(producer, more, rate=100_000.0)  # while no archiver runs
    proc = start_archiver(env, log)
    expected = sorted(later_ids[topic] + more_ids[topic])
    await_condition(
        lambda: sorted(r[2] for r in archived_rows(root).get(topic, [])) == expected, 90,
        what="the records produced while it was stopped",
    )  # fmt: skip
    stop_archiver(proc, log, started=2)


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
    env = archiver_env(endpoints, admin, tmp_path)
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


def _storage_with_files(root: Path, files: int, rows: int) -> ArchiveStorage:
    """`files` committed files of `rows` transactions each for one partition and date,
    plus one uncommitted file past the progress."""
    storage = ArchiveStorage(str(root))
    txs = simulated_history(SimulationConfig(seed=3, n_transactions=max(100, files * rows + rows),
                                             days=1)).transactions  # fmt: skip
    day = datetime(2026, 1, 5, tzinfo=UTC).date()
    for f in range(files + 1):
        chunk = txs[f * rows : (f + 1) * rows]
        offsets = [f * rows * 2 + 2 * i for i in range(len(chunk))]  # markers take offsets
        table = layout.table(Transaction, chunk, [0] * len(chunk), offsets, [None] * len(chunk))
        storage.write("t", day, layout.FileName("t", 0, offsets[0]), table)
    storage.set_progress("t", 0, files * rows * 2)  # the last file never committed
    return storage


def _rows(root: Path) -> list[int]:
    data = ds.dataset(root / "t", format="parquet", partitioning="hive").to_table()
    return sorted(data["kafka_offset"].to_pylist())


def test_compaction_merges_committed_files_and_a_crash_in_it_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = _storage_with_files(tmp_path / "a", files=6, rows=30)
    before = _rows(tmp_path / "a")
    assert storage.compact("t", 0, min_files=7, max_rows=1000) == 0  # too few files
    assert storage.compact("t", 0, min_files=2, max_rows=100) == 4  # 6 into 2, by rows
    names = sorted(n.first_offset for n in storage.names("t"))
    assert names == [0, 180, 360]  # two merged files and the uncommitted one, untouched
    assert _rows(tmp_path / "a") == before

    crashed = _storage_with_files(tmp_path / "b", files=4, rows=10)
    before = _rows(tmp_path / "b")
    calls = {"n": 0}
    real_delete = crashed._delete

    def crash_after_the_first_delete(path: str) -> None:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("killed mid-compaction")
        real_delete(path)

    monkeypatch.setattr(crashed, "_delete", crash_after_the_first_delete)
    with pytest.raises(OSError, match="killed"):
        crashed.compact("t", 0, min_files=2, max_rows=1000)
    assert len(_rows(tmp_path / "b")) > len(before)  # rows twice until repaired
    with QueryArchive(str(tmp_path / "b"), TopicNames("t", "d", "l")) as archive:
        history = archive.labelled_history(datetime(2026, 1, 1, tzinfo=UTC),
                                           datetime(2026, 2, 1, tzinfo=UTC),
                                           datetime(2026, 2, 1, tzinfo=UTC))  # fmt: skip
    assert history.num_rows == len(before)  # the queries read one copy of each
    ArchiveStorage(str(tmp_path / "b")).compact("t", 0, min_files=2, max_rows=1000)
    assert _rows(tmp_path / "b") == before
    assert sorted(n.first_offset for n in crashed.names("t")) == [0, 80]  # merged, uncommitted


def _s3_rows(fs: pafs.FileSystem, root: str) -> dict[str, list[tuple[int, int, str]]]:
    """(partition, offset, transaction id) of every archived row on S3, per topic."""
    rows: dict[str, list[tuple[int, int, str]]] = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        parts = info.path.removeprefix(root + "/").split("/")
        if parts[0] == PROGRESS_DIR or not info.base_name.endswith(".parquet"):
            continue
        try:
            with fs.open_input_file(info.path) as source:
                data = pq.read_table(source, columns=["kafka_partition", "kafka_offset",
                                                      "transaction_id"])  # fmt: skip
        except OSError:
            if fs.get_file_info(info.path).type == pafs.FileType.NotFound:
                continue  # an uncommitted flush's file, deleted after the listing
            raise
        rows.setdefault(parts[0], []).extend(
            zip(*(data[c].to_pylist() for c in data.column_names), strict=True)
        )
    return rows


def test_on_s3_compatible_storage_every_record_is_archived_once_across_kill_minus_nine(
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    make_producer: Callable[..., Producer],
) -> None:
    """The same layout and exactly-once through pyarrow's S3 filesystem, one URL setting.
    No S3 service runs here: moto's S3 server (127.0.0.1) stands in for one."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - dev-only dependency

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    proc: subprocess.Popen[bytes] | None = None
    try:
        host, port = server.get_host_and_port()
        secret = f"secret-{uuid.uuid4().hex}"
        fs = pafs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http",
                               access_key="archiver", secret_key=secret, region="us-east-1",
                               allow_bucket_creation=True)  # fmt: skip
        fs.create_dir("fraud-archive")
        env = {
            **archiver_env(endpoints, admin, tmp_path),
            "FRAUD_ARCHIVE_URL": f"s3://fraud-archive/prod?endpoint_override={host}:{port}"
                                 "&scheme=http&region=us-east-1",
            "AWS_ACCESS_KEY_ID": "archiver", "AWS_SECRET_ACCESS_KEY": secret,
        }  # fmt: skip
        log = tmp_path / "archiver.log"
        records, ids = _records(env, 1500, seed=35)
        valid = sum(len(v) for v in ids.values())
        feeder = threading.Thread(target=_produce, args=(make_producer(), records, 300.0))

        def count() -> int:
            return sum(len(v) for v in _s3_rows(fs, "fraud-archive/prod").values())

        proc = start_archiver(env, log)
        feeder.start()
        await_condition(lambda: count() > 0, 60)
        proc.kill()  # mid-traffic, between or inside flushes
        proc.wait(10)
        proc = start_archiver(env, log)
        feeder.join(60)
        await_condition(lambda: count() >= valid, 90)
        stop_archiver(proc, log, started=2)
        rows = _s3_rows(fs, "fraud-archive/prod")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.stop()
    for topic, want in ids.items():
        coordinates = [(p, o) for p, o, _id in rows[topic]]
        assert len(coordinates) == len(set(coordinates)), f"{topic}: a record archived twice"
        assert sorted(i for _p, _o, i in rows[topic]) == sorted(want)
    assert secret not in log.read_text()
