"""Queries on the archive: labelled history as of a time, latest labels, a card's timeline.

As-of semantics. A transaction's label "known as of T" is its latest label by
`labelled_at` among those with `labelled_at <= T` (ties go to the later Kafka record: the
higher partition, then offset). A label given after T never changes any row of a result
as of T, so a model trained on `labelled_history(start, end, as_of=T)` sees only what was
known at T; the property test in tests/unit/test_history_query.py holds us to it. The
time is the label's own `labelled_at`, as its producer stated it, not the broker's.

Duplicates the archive must not hold are tolerated: a transaction id's first record (the
lowest partition, then offset) is the transaction, wherever the later copies fall, and
its first decision is its decision.

The archive is plain Hive-partitioned Parquet (layout.py): DuckDB reads it here, and
Spark, Trino or pyarrow.dataset read the same directories with no export step. A topic
with no files yet reads as empty with the contract's columns. Values reach SQL only as
parameters; paths are ours and are quoted as SQL literals.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import duckdb
import pyarrow as pa

from fraudstream.contracts import Contract, Decision, Label, Transaction, Verdict
from fraudstream.history import layout
from fraudstream.settings import CommonSettings

_CONTRACTS: dict[str, type[Contract]] = {
    "transactions": Transaction,
    "decisions": Decision,
    "labels": Label,
}
# Decision fields the transaction already has, and those renamed to say whose they are.
_SHARED_WITH_TRANSACTION = {"schema_version", "transaction_id", "card_token", "event_time"}
_DECISION_RENAMES = {"path": "decision_path"}
_LABEL_COLUMNS = {
    "verdict": "label_verdict",
    "source": "label_source",
    "actor": "label_actor",
    "labelled_at": "labelled_at",
    "note": "label_note",
}
# Where each transaction sat in Kafka, and its local time: what a replay needs (backtest.py).
_TX_COORDINATES = (
    "kafka_partition", "kafka_offset", "kafka_timestamp", layout.LOCAL_OFFSET_COLUMN,
)  # fmt: skip
_FIRST = "ORDER BY kafka_partition, kafka_offset"
_LATEST = "ORDER BY labelled_at DESC, kafka_partition DESC, kafka_offset DESC"


@dataclass(frozen=True)
class TopicNames:
    """The names of the archived topics the queries read (directories under the root)."""

    transactions: str
    decisions: str
    labels: str

    @classmethod
    def from_settings(cls, settings: CommonSettings | None = None) -> TopicNames:
        """The names configured in `settings` (by default read from the environment)."""
        s = settings if settings is not None else CommonSettings()
        return cls(s.topic_transactions, s.topic_decisions, s.topic_labels)


class Archive:
    """The archive as DuckDB views `transactions`, `decisions` and `labels`.

    One in-memory DuckDB connection per instance; calls are serialised, so an instance
    may be shared between threads. Use it as a context manager or call `close()`.
    """

    def __init__(self, root: str, topics: TopicNames | None = None) -> None:
        """Read `<root>/<topic>/date=*/*.parquet`; topic names default to the settings'."""
        names = topics if topics is not None else TopicNames.from_settings()
        base = root.rstrip("/")
        self._open({role: f"{base}/{getattr(names, role)}/*/*.parquet" for role in _CONTRACTS})

    @classmethod
    def from_tables(
        cls,
        transactions: pa.Table | None = None,
        decisions: pa.Table | None = None,
        labels: pa.Table | None = None,
    ) -> Self:
        """An archive over in-memory Arrow tables (tests, notebooks); None is an empty topic."""
        archive = cls.__new__(cls)
        archive._open({})
        given = {"transactions": transactions, "decisions": decisions, "labels": labels}
        for role, data in given.items():
            if data is not None:
                archive._con.register(f"_table_{role}", data)
                archive._define(role, f"_table_{role}")
        return archive

    def _open(self, globs: dict[str, str]) -> None:
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self._globs = globs
        self._reads_files: dict[str, bool] = {}
        for role, contract in _CONTRACTS.items():
            self._con.register(f"_schema_{role}", layout.schema(contract).empty_table())
            self._define(role, None)

    def _define(self, role: str, source: str | None) -> None:
        """(Re)define a view: the contract's columns, plus the rows of `source` if any."""
        # DDL takes no parameters; `role` is one of ours and `source` one of our tables or a
        # read_parquet of our path, quoted as a literal. No source: the empty table twice.
        schema = f"_schema_{role}"
        self._con.execute(
            f"CREATE OR REPLACE VIEW {role} AS SELECT * FROM {schema}"  # noqa: S608
            f" UNION ALL BY NAME SELECT * FROM {source or schema}"
        )

    def _refresh(self) -> None:
        """Point each topic's view at its files, or at nothing while it has none."""
        for role, pattern in self._globs.items():
            found = self._con.execute("SELECT count(*) FROM glob(?)", [pattern]).fetchall()
            has_files = found[0][0] > 0
            if self._reads_files.get(role) != has_files:
                files = (
                    f"read_parquet({_literal(pattern)}, hive_partitioning = true,"
                    " union_by_name = true)"
                )
                self._define(role, files if has_files else None)
                self._reads_files[role] = has_files

    def _query(self, sql: str, params: dict[str, Any]) -> pa.Table:
        with self._lock:
            self._refresh()
            verdicts = {k: v for k, v in _VERDICTS.items() if f"${k}" in sql}
            return self._con.sql(sql, params=params | verdicts).to_arrow_table()

    def labelled_history(self, start: datetime, end: datetime, as_of: datetime) -> pa.Table:
        """Transactions with `start <= event_time < end`, each with its decision and the
        label known as of `as_of` (`label_*`, `labelled_at`, `is_fraud`: true for fraud,
        false for legit, null when unlabelled then or the verdict is neither) and its Kafka
        coordinates (`kafka_*`, `event_time_utc_offset_s`); ordered by event time, then
        transaction id."""
        params = _window(start, end) | {"as_of": _utc("as_of", as_of)}
        return self._query(_HISTORY_SQL, params)

    def labels_as_of(
        self, as_of: datetime, start: datetime | None = None, end: datetime | None = None
    ) -> pa.Table:
        """The latest label known as of `as_of` of every labelled transaction, with
        `is_fraud`; `start`/`end` keep those whose transaction time (the label's
        `event_time`) is in [start, end). Ordered by `labelled_at`, then transaction id."""
        params = {
            "as_of": _utc("as_of", as_of),
            "start": None if start is None else _utc("start", start),
            "end": None if end is None else _utc("end", end),
        }
        return self._query(_LABELS_SQL, params)

    def fraud_labels(self, as_of: datetime) -> pa.Table:
        """Every fraud label given by `as_of` that names a merchant, device or IP, as the
        scorer folds them into label risk: each one, not only a transaction's latest.
        Columns `transaction_id`, `merchant_id`, `device_id`, `ip`, `event_time`,
        `labelled_at` and `kafka_timestamp` (when the scorer could first read it); in
        `labelled_at` order."""
        return self._query(_FRAUD_LABELS_SQL, {"as_of": _utc("as_of", as_of)})

    def served_since(self, since: datetime, as_of: datetime) -> pa.Table:
        """Decisions made at or after `since` (their `decided_at`), each with the label
        known as of `as_of`: `transaction_id`, `card_token`, `event_time`, `decided_at`,
        `action`, `model_version`, `shadow_model_version`, `labelled` and `is_fraud` (as in
        `labelled_history`). What the promotion policy judges shadow and canary traffic
        on; ordered by `decided_at`, then transaction id."""
        params = {"since": _utc("since", since), "as_of": _utc("as_of", as_of)}
        return self._query(_SERVED_SQL, params)

    def newest_transaction_time(self) -> datetime | None:
        """The latest `event_time` in the archive (None when it has no transactions)."""
        found = self._query("SELECT max(event_time) AS newest FROM transactions", {})
        newest = found["newest"][0].as_py()
        return newest.astimezone(UTC) if newest is not None else None

    def card_timeline(self, card_token: str, limit: int = 100) -> pa.Table:
        """A card's latest `limit` transactions, newest first, each with its decision and
        its latest label (the columns of `labelled_history`)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        return self._query(_TIMELINE_SQL, {"card": card_token, "limit": limit})

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_VERDICTS = {"fraud": Verdict.FRAUD.value, "legit": Verdict.LEGIT.value}


def _joined(where: str, label_filter: str, order: str, limit: str = "") -> str:
    """SQL: transactions matching `where` (the first copy of each id), with their first
    decision and their latest label among those matching `label_filter`. Ids are picked
    before first copies are taken, so a later copy never stands in for the first."""
    tx = ", ".join(f"t.{_ident(c)}" for c in [*_fields(Transaction), *_TX_COORDINATES])
    decision = ", ".join(
        f"d.{_ident(c)} AS {_ident(_DECISION_RENAMES.get(c, c))}"
        for c in _fields(Decision)
        if c not in _SHARED_WITH_TRANSACTION
    )
    label = ", ".join(f"l.{_ident(c)} AS {_ident(a)}" for c, a in _LABEL_COLUMNS.items())
    # Only our column names and fixed fragments are formatted in; values are parameters.
    return f"""
        WITH ids AS (SELECT DISTINCT transaction_id FROM transactions WHERE {where}),
        tx AS (
            SELECT * FROM (
                SELECT * FROM transactions SEMI JOIN ids USING (transaction_id)
                QUALIFY row_number() OVER (PARTITION BY transaction_id {_FIRST}) = 1
            ) WHERE {where}
        ),
        decision AS (
            SELECT * FROM decisions SEMI JOIN tx USING (transaction_id)
            QUALIFY row_number() OVER (PARTITION BY transaction_id {_FIRST}) = 1
        ),
        label AS (
            SELECT * FROM labels SEMI JOIN tx USING (transaction_id) WHERE {label_filter}
            QUALIFY row_number() OVER (PARTITION BY transaction_id {_LATEST}) = 1
        )
        SELECT {tx}, {decision}, {label}, {_is_fraud("l.verdict")}
        FROM tx AS t
        LEFT JOIN decision AS d ON d.transaction_id = t.transaction_id
        LEFT JOIN label AS l ON l.transaction_id = t.transaction_id
        ORDER BY {order} {limit}
    """  # noqa: S608


def _latest_labels() -> str:
    """SQL: the latest label as of $as_of per transaction, its event time in [$start, $end)
    (either bound may be null: unbounded)."""
    columns = ", ".join(_ident(c) for c in _fields(Label))
    return f"""
        WITH latest AS (
            SELECT * FROM labels WHERE labelled_at <= $as_of
            QUALIFY row_number() OVER (PARTITION BY transaction_id {_LATEST}) = 1
        )
        SELECT {columns}, {_is_fraud("verdict")} FROM latest
        WHERE (CAST($start AS TIMESTAMPTZ) IS NULL OR event_time >= $start)
          AND (CAST($end AS TIMESTAMPTZ) IS NULL OR event_time < $end)
        ORDER BY labelled_at, transaction_id
    """  # noqa: S608


def _is_fraud(verdict: str) -> str:
    return f"CASE {verdict} WHEN $fraud THEN true WHEN $legit THEN false END AS is_fraud"


def _fields(contract: type[Contract]) -> list[str]:
    return [name for name in contract.model_fields if name != "schema_version"]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _utc(name: str, value: datetime) -> datetime:
    """`value` in UTC; a naive time is refused, since its instant is unknown."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name} must be timezone-aware (for example datetime(..., tzinfo=UTC)),"
            f" not the naive {value.isoformat()}"
        )
    return value.astimezone(UTC)


def _window(start: datetime, end: datetime) -> dict[str, datetime]:
    window = {"start": _utc("start", start), "end": _utc("end", end)}
    if window["end"] < window["start"]:
        raise ValueError(f"end ({end.isoformat()}) is before start ({start.isoformat()})")
    return window


_HISTORY_SQL = _joined(
    "event_time >= $start AND event_time < $end",
    "labelled_at <= $as_of",
    "t.event_time, t.transaction_id",
)
_TIMELINE_SQL = _joined(
    "card_token = $card", "true", "t.event_time DESC, t.transaction_id DESC", "LIMIT $limit"
)
_LABELS_SQL = _latest_labels()
_SERVED_SQL = f"""
    WITH d AS (
        SELECT * FROM decisions WHERE decided_at >= $since
        QUALIFY row_number() OVER (PARTITION BY transaction_id {_FIRST}) = 1
    ),
    l AS (
        SELECT * FROM labels SEMI JOIN d USING (transaction_id) WHERE labelled_at <= $as_of
        QUALIFY row_number() OVER (PARTITION BY transaction_id {_LATEST}) = 1
    )
    SELECT d.transaction_id, d.card_token, d.event_time, d.decided_at, d.action,
           d.model_version,
           d.shadow_model_version, l.transaction_id IS NOT NULL AS labelled,
           {_is_fraud("l.verdict")}
    FROM d LEFT JOIN l USING (transaction_id)
    ORDER BY d.decided_at, d.transaction_id
"""  # noqa: S608
_FRAUD_LABELS_SQL = """
    SELECT transaction_id, merchant_id, device_id, ip, event_time, labelled_at, kafka_timestamp
    FROM labels
    WHERE verdict = $fraud AND labelled_at <= $as_of
      AND (merchant_id IS NOT NULL OR device_id IS NOT NULL OR ip IS NOT NULL)
    ORDER BY labelled_at, kafka_partition, kafka_offset
"""
