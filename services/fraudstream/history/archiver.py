"""The archiver: every record of the archived topics, once, as Parquet (layout.py).

Exactly once without a transaction: the archive holds its own progress. Per Kafka
partition a progress file (`<root>/_progress/<topic>+<partition>.json`) names the next
offset to archive; it is written after the data files of a flush, and it is the commit.
A crash after some data files of a flush leaves files whose first offset is at or past
the progress: on assignment they are deleted and the partition is read again from the
progress, so a restart writes every record exactly once (tests/integration/
test_archiver.py kills it with SIGKILL). Consumer-group commits follow each flush for
lag monitoring only; the archive does not depend on them, so an archive restored from a
backup or copied elsewhere stays consistent with itself.

A flush writes one file per event date per partition, bounded by `archive_flush_rows`
and `archive_flush_bytes` per partition, and happens at the latest `archive_flush_s`
after a partition's oldest buffered record. Local files are written under a temporary
name and renamed; on object storage a PUT is atomic already.

Records that fail their contract (they cannot come from our services; on the input
topic the scorer sends them to the DLQ, which is archived too) are counted by reason,
logged with their offset and skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram
from pyarrow import fs as pafs
from pydantic import BaseModel, Field

from fraudstream import kafka_clients
from fraudstream.contracts import Contract, Rejection, decode
from fraudstream.errors import FraudStreamError
from fraudstream.history import layout
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.observability.http import HealthState
from fraudstream.observability.http import serve as serve_http
from fraudstream.observability.process import run_service, stop_on_signals
from fraudstream.settings import CommonSettings, mask_url
from fraudstream.topics import TOPICS

_log = logging.getLogger(__name__)
PROGRESS_DIR = "_progress"
_SOURCES_KEY = b"fraudstream.compacted_from"  # first offsets of a merged file's sources
ARCHIVED_ROLES = (
    "transactions", "dlq", "decisions", "review", "labels", "retrain", "models", "rules",
)  # fmt: skip


class ArchiverSettings(CommonSettings):
    """`FRAUD_ARCHIVE_*`: where the archive lives and how often it is written."""

    archive_url: str = Field(
        default="archive",
        description="Archive root: a local directory, or a URL pyarrow opens (s3://bucket/"
        "prefix, gs://...; credentials from the environment as pyarrow reads them).",
    )
    archive_group: str = Field(default="fraud-archiver", description="Consumer group.")
    archive_start: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a partition never archived starts: its log's "
        "beginning, or its end (an archive of what comes from now on).",
    )  # fmt: skip
    archive_flush_s: float = Field(default=60.0, gt=0, le=3600)
    archive_flush_rows: int = Field(default=200_000, ge=1)
    archive_flush_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    archive_retention_days: int = Field(
        default=0, ge=0, description="Delete date directories older than this; 0 keeps all."
    )
    archive_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    archive_compact_min_files: int = Field(
        default=8, ge=2, description="`fraudctl archive --compact` merges a partition's "
        "files of one date once it has at least this many.",
    )  # fmt: skip
    archive_compact_max_rows: int = Field(
        default=1_000_000, ge=1, description="Largest compacted file, in rows."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
    metrics_port: int = Field(default=9410, ge=0, le=65535, description="0 picks a free port.")


class ArchiveError(FraudStreamError):
    """The archive cannot be opened or written."""


@dataclass
class _Buffer:
    """Records of one Kafka partition read since its last flush."""

    messages: list[BaseModel] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    timestamps: list[int | None] = field(default_factory=list)
    bytes: int = 0
    next_offset: int | None = None  # after the last record read (valid ones or not)
    since: float | None = None  # monotonic time of the oldest unflushed record


class ArchiverMetrics:
    """The archiver's Prometheus series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "fraud_archive_records", "Records written to the archive.", ["topic"],
            registry=registry,
        )  # fmt: skip
        self.invalid = Counter(
            "fraud_archive_invalid_records", "Records skipped: they fail their contract.",
            ["topic", "reason"], registry=registry,
        )  # fmt: skip
        self.files = Counter(
            "fraud_archive_files", "Parquet files written.", ["topic"], registry=registry
        )
        self.flush_seconds = Histogram(
            "fraud_archive_flush_seconds", "Time to write one partition's flush.",
            registry=registry,
        )  # fmt: skip


class ArchiveStorage:
    """The archive's storage: data files and progress, on a pyarrow filesystem."""

    def __init__(self, url: str) -> None:
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(url)
        except (pa.ArrowInvalid, ValueError):  # a relative local path
            self.fs, self.root = pafs.LocalFileSystem(), str(url)
        except OSError as exc:
            raise ArchiveError(f"cannot open the archive at {mask_url(url)}: {exc}") from exc
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.root = self.root.rstrip("/") or "/"
        self.fs.create_dir(f"{self.root}/{PROGRESS_DIR}", recursive=True)

    def progress(self, topic: str, partition: int) -> int | None:
        """The next offset to archive for a partition, None when nothing was archived."""
        path = self._progress_path(topic, partition)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as stream:
            return int(orjson.loads(stream.read())["next_offset"])

    def set_progress(self, topic: str, partition: int, next_offset: int) -> None:
        """Commit a flush: the partition's records before `next_offset` are archived."""
        body = orjson.dumps({"next_offset": next_offset, "at": datetime.now(UTC).isoformat()})
        self._write(self._progress_path(topic, partition), lambda out: out.write(body))

    def write(self, topic: str, day: date, name: layout.FileName, rows: Any) -> str:
        """Write one data file (an Arrow table); returns its path."""
        path = layout.file_path(self.root, topic, day, name)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        self._write(path, lambda out: pq.write_table(rows, out, compression="zstd"))
        return path

    def discard_from(self, topic: str, partition: int, offset: int) -> list[str]:
        """Delete the partition's files at or past `offset` (a flush that never committed)
        and leftover temporary files; returns what was deleted."""
        prefix = f".{topic}+{partition}+"
        gone = []
        for info in self._files(topic):
            name = layout.FileName.parse(info.base_name)
            stale = name is not None and name.partition == partition and name.first_offset >= offset
            if stale or (info.base_name.startswith(prefix) and info.base_name.endswith(".tmp")):
                gone.append(info.path)
        for path in gone:
            self.fs.delete_file(path)
        return gone

    def compact(self, topic: str, partition: int, *, min_files: int, max_rows: int) -> int:
        """Merge the partition's committed files of each date into files of up to
        `max_rows` rows; returns how many files were merged away.

        Only files below the partition's progress are touched: archivers create and delete
        files at or past it, so they may run meanwhile; two compactions of one archive
        may not. A merged file takes its first source's name and lists its sources in its
        metadata; it replaces that source (an atomic rename or PUT), then the other sources
        are deleted. A crash in between leaves rows twice until the next compaction, which
        deletes the leftovers first (the history queries read one copy of each record)."""
        progress = self.progress(topic, partition)
        if progress is None:
            return 0
        merged = 0
        for day, found in sorted(self._by_day(topic, partition, progress).items()):
            names = self._drop_leftovers(topic, day, found)
            for group in self._groups(topic, day, names, max_rows):
                if len(names) >= min_files and len(group) >= 2:
                    self._merge(topic, day, group)
                    merged += len(group) - 1
        return merged

    def _by_day(self, topic: str, partition: int, below: int) -> dict[date, list[layout.FileName]]:
        found: dict[date, list[layout.FileName]] = {}
        for info in self._files(topic):
            name = layout.FileName.parse(info.base_name)
            day = info.path.rsplit("/", 2)[-2].removeprefix("date=")
            if name is None or name.partition != partition or name.first_offset >= below:
                continue
            try:
                found.setdefault(date.fromisoformat(day), []).append(name)
            except ValueError:
                continue
        return {d: sorted(n, key=lambda n: n.first_offset) for d, n in found.items()}

    def _drop_leftovers(
        self, topic: str, day: date, names: list[layout.FileName]
    ) -> list[layout.FileName]:
        """Delete sources a merged file already holds (a compaction that crashed)."""
        held: set[int] = set()
        for name in names:
            meta = pq.read_metadata(self.fs.open_input_file(self._path(topic, day, name)))
            sources = (meta.metadata or {}).get(_SOURCES_KEY)
            if sources is not None:
                held |= set(orjson.loads(sources)) - {name.first_offset}
        for name in names:
            if name.first_offset in held:
                _log.warning("compaction: deleting %s, already merged", name)
                self._delete(self._path(topic, day, name))
        return [n for n in names if n.first_offset not in held]

    def _groups(
        self, topic: str, day: date, names: list[layout.FileName], max_rows: int
    ) -> list[list[layout.FileName]]:
        groups: list[list[layout.FileName]] = [[]]
        rows = 0
        for name in names:
            meta = pq.read_metadata(self.fs.open_input_file(self._path(topic, day, name)))
            if groups[-1] and rows + meta.num_rows > max_rows:
                groups.append([])
                rows = 0
            groups[-1].append(name)
            rows += meta.num_rows
        return groups

    def _merge(self, topic: str, day: date, group: list[layout.FileName]) -> None:
        tables = [pq.read_table(self.fs.open_input_file(self._path(topic, day, n)))
                  for n in group]  # fmt: skip
        table = pa.concat_tables(tables, promote_options="default").sort_by("kafka_offset")
        sources = orjson.dumps([n.first_offset for n in group])
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               _SOURCES_KEY: sources})  # fmt: skip
        self.write(topic, day, group[0], table)  # replaces the first source
        for name in group[1:]:
            self._delete(self._path(topic, day, name))

    def _delete(self, path: str) -> None:
        self.fs.delete_file(path)

    def _path(self, topic: str, day: date, name: layout.FileName) -> str:
        return layout.file_path(self.root, topic, day, name)

    def expire(self, topic: str, before: date) -> list[str]:
        """Delete `topic`'s date directories older than `before`."""
        gone = []
        selector = pafs.FileSelector(f"{self.root}/{topic}", allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            day = info.base_name.removeprefix("date=")
            if info.type == pafs.FileType.Directory and day != info.base_name:
                try:
                    old = date.fromisoformat(day) < before
                except ValueError:
                    continue
                if old:
                    self.fs.delete_dir(info.path)
                    gone.append(info.path)
        return gone

    def names(self, topic: str) -> list[layout.FileName]:
        """The identities of `topic`'s data files."""
        found = (layout.FileName.parse(info.base_name) for info in self._files(topic))
        return [name for name in found if name is not None]

    def _files(self, topic: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(f"{self.root}/{topic}", recursive=True, allow_not_found=True)
        return [i for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File]

    def _progress_path(self, topic: str, partition: int) -> str:
        return f"{self.root}/{PROGRESS_DIR}/{topic}+{partition}.json"

    def _write(self, path: str, fill: Callable[[Any], object]) -> None:
        # Hidden and not *.parquet: pyarrow, Spark, Trino and DuckDB globs never read a
        # file that is still being written.
        head, _, base = path.rpartition("/")
        target = f"{head}/.{base}.tmp" if self.local else path
        with self.fs.open_output_stream(target) as out:
            fill(out)
        if self.local:
            self.fs.move(target, path)  # atomic on one filesystem


class Archiver:
    """The consume → Parquet loop (one instance per group member)."""

    def __init__(
        self,
        settings: ArchiverSettings,
        bootstrap: str | None = None,
        registry: CollectorRegistry | None = None,
        roles: Iterable[str] = ARCHIVED_ROLES,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap or resolve_endpoints(settings).kafka_bootstrap
        self.archive = ArchiveStorage(settings.archive_url)
        by_role = {spec.setting.removeprefix("topic_"): spec for spec in TOPICS}
        self.contracts: dict[str, type[Contract]] = {
            by_role[role].name(settings): by_role[role].contract for role in roles
        }
        self.registry = registry or CollectorRegistry()
        self.metrics = ArchiverMetrics(self.registry)
        self.health = HealthState(liveness_timeout_s=120.0)
        self.health.set_rules_only_allowed(True)  # no model: ready means assigned
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._consumer: Consumer | None = None
        self._last_expiry = 0.0

    def run(self, stop: threading.Event) -> None:
        """Archive until `stop` is set; buffered records are flushed before returning."""
        consumer = kafka_clients.consumer(
            self.settings, self.bootstrap, self.settings.archive_group,
            # A restarted archiver waits for its killed predecessor's session to lapse
            # before the group assigns again: 6 s (the broker's minimum), not 45 s.
            {"partition.assignment.strategy": "range", "fetch.max.bytes": 16 * 1024 * 1024,
             "session.timeout.ms": 6_000, "heartbeat.interval.ms": 1_500},
        )  # fmt: skip
        self._consumer = consumer
        consumer.subscribe(
            list(self.contracts), on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not stop.is_set():
                messages = consumer.consume(num_messages=5000, timeout=0.5)
                self._add(messages)
                self._flush_due()
                self._expire_due()
                self.health.mark_progress()
        finally:
            self._flush(list(self._buffers))
            consumer.close()
            self._consumer = None

    def _add(self, messages: list[Message]) -> None:
        now = time.monotonic()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise ArchiveError(f"fatal Kafka consumer error: {error}")
                _log.warning("consumer error: %s", error)
                continue
            topic, partition, offset = _coordinates(message)
            buffer = self._buffers.setdefault((topic, partition), _Buffer())
            buffer.next_offset = offset + 1
            if buffer.since is None:
                buffer.since = now
            value = message.value()
            result = decode(self.contracts[topic], value, self.settings.archive_max_message_bytes)
            if isinstance(result, Rejection):
                self.metrics.invalid.labels(topic, result.reason.value).inc()
                _log.warning("%s[%d] offset %d not archived: %s (%s)", topic, partition,
                             offset, result.reason.value, result.detail[:200])  # fmt: skip
                continue
            _kind, timestamp = message.timestamp()
            buffer.messages.append(result)
            buffer.offsets.append(offset)
            buffer.timestamps.append(timestamp)
            buffer.bytes += len(value or b"")

    def _flush_due(self) -> None:
        settings, now = self.settings, time.monotonic()
        due = [
            key for key, b in self._buffers.items()
            if b.since is not None and (
                now - b.since >= settings.archive_flush_s
                or len(b.offsets) >= settings.archive_flush_rows
                or b.bytes >= settings.archive_flush_bytes
            )
        ]  # fmt: skip
        self._flush(due)

    def _flush(self, keys: Iterable[tuple[str, int]]) -> None:
        for topic, partition in keys:
            buffer = self._buffers.get((topic, partition))
            if buffer is None or buffer.next_offset is None or buffer.since is None:
                continue
            with self.metrics.flush_seconds.time():
                self._write_files(topic, partition, buffer)
                self.archive.set_progress(topic, partition, buffer.next_offset)
            self.metrics.records.labels(topic).inc(len(buffer.offsets))
            self._buffers[(topic, partition)] = _Buffer(next_offset=buffer.next_offset)
            self._commit(topic, partition, buffer.next_offset)

    def _write_files(self, topic: str, partition: int, buffer: _Buffer) -> None:
        contract = self.contracts[topic]
        time_field = layout.time_field(contract)
        by_day: dict[date, list[int]] = {}
        for i, message in enumerate(buffer.messages):
            moment = getattr(message, time_field) if time_field else None
            if moment is None:
                ts = buffer.timestamps[i]
                moment = datetime.fromtimestamp((ts or 0) / 1000, UTC)
            by_day.setdefault(moment.astimezone(UTC).date(), []).append(i)
        for day, rows in sorted(by_day.items()):
            offsets = [buffer.offsets[i] for i in rows]
            table = layout.table(
                contract, [buffer.messages[i] for i in rows], [partition] * len(rows),
                offsets, [buffer.timestamps[i] for i in rows],
            )  # fmt: skip
            self.archive.write(topic, day, layout.FileName(topic, partition, offsets[0]), table)
            self.metrics.files.labels(topic).inc()

    def _commit(self, topic: str, partition: int, next_offset: int) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            consumer.commit(offsets=[TopicPartition(topic, partition, next_offset)],
                            asynchronous=True)  # fmt: skip
        except KafkaException as exc:  # lag monitoring only: the archive has its progress
            _log.debug("group offset not committed: %s", exc)

    def _expire_due(self) -> None:
        days = self.settings.archive_retention_days
        if days <= 0 or time.monotonic() - self._last_expiry < 3600:
            return
        self._last_expiry = time.monotonic()
        before = datetime.now(UTC).date() - timedelta(days=days)
        for topic in self.contracts:
            for path in self.archive.expire(topic, before):
                _log.info("retention: deleted %s", path)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            start = self.archive.progress(tp.topic, tp.partition)
            if start is None:
                start = self._first_progress(consumer, tp)
            else:
                start = self._still_in_the_log(consumer, tp, start)
            gone = self.archive.discard_from(tp.topic, tp.partition, start)
            if gone:
                _log.warning("%s[%d]: deleted %d file(s) of a flush that did not commit: %s",
                             tp.topic, tp.partition, len(gone), gone)  # fmt: skip
            tp.offset = start
            self._buffers[(tp.topic, tp.partition)] = _Buffer(next_offset=start)
        consumer.assign(partitions)
        self.health.set_assigned(len(consumer.assignment()))
        _log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in partitions))

    def _first_progress(self, consumer: Consumer, tp: TopicPartition) -> int:
        """A partition never archived starts at its log's beginning (or its end, per
        `archive_start`), recorded before any data file is written: a data file without
        progress is then never ours to delete."""
        if any(n.partition == tp.partition for n in self.archive.names(tp.topic)):
            raise ArchiveError(
                f"{tp.topic}[{tp.partition}] has archive files but no progress file under "
                f"{PROGRESS_DIR}/: restore it, or move the files away to archive again"
            )
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        start = int(low if self.settings.archive_start == "earliest" else high)
        self.archive.set_progress(tp.topic, tp.partition, start)
        return start

    def _still_in_the_log(self, consumer: Consumer, tp: TopicPartition, start: int) -> int:
        """Where to resume: the progress, or the log's beginning if the topic's retention
        deleted records before they were archived (said once, as an error). Offsets skipped
        while reading are no loss: transaction markers and aborted records take offsets."""
        low, _high = consumer.get_watermark_offsets(tp, timeout=10)
        if low <= start:
            return start
        _log.error("%s[%d]: offsets %d-%d were deleted by the topic's retention before they "
                   "were archived", tp.topic, tp.partition, start, low - 1)  # fmt: skip
        return int(low)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._flush(keys)  # still ours until this returns
        for key in keys:
            self._buffers.pop(key, None)
        consumer.unassign()
        self.health.set_assigned(0)


def _coordinates(message: Message) -> tuple[str, int, int]:
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    if topic is None or partition is None or offset is None:
        raise ArchiveError("a consumed record without topic, partition or offset")
    return topic, partition, offset


def compact(
    settings: ArchiverSettings | None = None, say: Callable[[str], None] = _log.info
) -> int:
    """Merge small committed files of every archived topic (`fraudctl archive --compact`);
    returns the number of files merged away. Run one at a time."""
    settings = settings or ArchiverSettings()
    storage = ArchiveStorage(settings.archive_url)
    by_role = {spec.setting.removeprefix("topic_"): spec for spec in TOPICS}
    total = 0
    for role in ARCHIVED_ROLES:
        topic = by_role[role].name(settings)
        partitions = sorted({n.partition for n in storage.names(topic)})
        for partition in partitions:
            merged = storage.compact(topic, partition, min_files=settings.archive_compact_min_files,
                                     max_rows=settings.archive_compact_max_rows)  # fmt: skip
            if merged:
                say(f"{topic}[{partition}]: merged {merged} file(s) away")
            total += merged
    return total


def serve(settings: ArchiverSettings | None = None) -> None:
    """Run the archiver until SIGTERM/SIGINT; buffered records are flushed first."""
    stop = stop_on_signals(_log, "flushing and stopping")
    settings = settings or ArchiverSettings()
    archiver = Archiver(settings)
    server = serve_http(
        archiver.registry, archiver.health, host=settings.metrics_host, port=settings.metrics_port
    )
    _log.info("archiving %s to %s; metrics on http://%s:%d", sorted(archiver.contracts),
              mask_url(settings.archive_url), server.host, server.port)  # fmt: skip
    try:
        archiver.run(stop)
    finally:
        server.close()


def main() -> None:
    """Console script `fraud-archiver`."""
    run_service(serve, _log)


if __name__ == "__main__":
    main()
