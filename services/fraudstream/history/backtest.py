"""Backtests: archived history replayed through the scorer's own stages with a candidate
rule pack and model, next to what was actually decided.

The replay is the serving code path, offline and batched: entity states split by input
partition as Redis holds them (`FeaturePipeline.transform_parts`, duplicate ids
included), merchant fraud labels folded in as the scorer's label folder would have had
them, `RulePack.evaluate`, `route_and_decide` and the `DecisionPolicy`.

Order. A partition's parts depend only on that partition's log in offset order, so the
warm-up (everything before the window, per partition) is folded without features. In
the window, what an event sees of a merchant, device or IP also depends on which events
of other partitions came before it; the scorer's batches are recovered from the
decisions' `decided_at` (one clock reading per batch), kept in offset order within each
partition. What the archive cannot tell, and so may differ from what was decided:

- block and allow lists (not archived: list rules never match here);
- the order, inside one scorer batch, of one merchant's (device's, IP's) events from
  different partitions; and labels folded within milliseconds of a decision;
- degraded decisions (scored without state) and the canary's rows: the replay scores
  every row on the full path with the one candidate model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.features.labels import LabelBook
from fraudstream.features.pipeline import (
    PartStates,
    StateKey,
    add_fraud_label,
    fold_parts,
    label_keys,
    label_paid_at,
)
from fraudstream.features.state import id_hash
from fraudstream.history import layout
from fraudstream.history.query import Archive
from fraudstream.history.rows import (
    EPOCH,
    TX_FIELDS,
    archived_columns,
    archived_events,
)
from fraudstream.rules.context import RuleBatch
from fraudstream.rules.engine import RuleOutcome, RulePack
from fraudstream.scoring.decide import DecisionPolicy, Verdict
from fraudstream.scoring.models import ModelSet
from fraudstream.scoring.routing import route_and_decide

BATCH_ROWS = 4096


@dataclass(frozen=True)
class Candidate:
    """What a backtest decides with: a rule pack and a model set (its champion only; an
    empty set is the rules-only path)."""

    rules: RulePack
    models: ModelSet
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)

    @property
    def model_version(self) -> str | None:
        champion = self.models.champion
        return champion.version if champion is not None else None

    @property
    def review_budget(self) -> float | None:
        """The share of traffic the champion's thresholds were chosen to send to review."""
        champion = self.models.champion
        return champion.ensemble.thresholds.review_budget if champion is not None else None


@dataclass
class Replayed:
    """The candidate's decisions on the window's rows, aligned with `history` (the
    window's transactions with their actual decisions and labels, in event-time order)."""

    history: pa.Table
    action: list[str]
    path: list[str]
    score: np.ndarray  # NaN where the model did not score (rules path, no model)
    decisive_rule: list[str | None]  # the rule id that decided, if one did
    rule_hits: list[tuple[str, ...]]  # every rule id that matched
    warmup_rows: int = 0
    duplicates: int = 0  # rows the replay found already decided for their card
    features: np.ndarray | None = None  # with `keep_features`: the rows' feature values


@dataclass(frozen=True)
class Window:
    """The reported window `[start, end)` of event time, and the time labels are known at."""

    start: datetime
    end: datetime
    as_of: datetime

    @classmethod
    def last_days(cls, archive: Archive, days: float, as_of: datetime | None = None) -> Window:
        """The archive's last `days` days of transactions (ending after its newest one)."""
        if days <= 0:
            raise ValueError(f"--days must be positive, not {days}")
        newest = archive.newest_transaction_time()
        if newest is None:
            raise ValueError("the archive holds no transactions yet")
        end = newest + timedelta(microseconds=1)
        return cls(end - timedelta(days=days), end, as_of or datetime.now(UTC))


def load_history(
    archive: Archive, window: Window, warmup_from: datetime | None = None
) -> tuple[pa.Table, pa.Table]:
    """(Transactions from `warmup_from` (default: the archive's start) to the window's end
    with their decisions and labels as of `window.as_of`; fraud labels as of then)."""
    rows = archive.labelled_history(warmup_from or EPOCH, window.end, window.as_of)
    return rows, archive.fraud_labels(window.as_of)


def replay(
    history: pa.Table,
    fraud_labels: pa.Table,
    candidate: Candidate,
    start: datetime,
    *,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = BATCH_ROWS,
    keep_features: bool = False,
) -> Replayed:
    """Decide every row of `history` at or after `start` with `candidate`, after folding
    the rows before it into entity state. `progress(n)` is told of every `n` rows done;
    `keep_features` keeps each decided row's features (the scoring spec's columns)."""
    keys = _replay_keys(history)
    order, warm = _replay_order(history, keys, start)
    inputs = _inputs(history)
    states = PartStates()
    _fold_warmup(inputs, order[warm[order]], states, progress)
    replayed = order[~warm[order]]
    replayed_keys = keys[replayed]  # non-decreasing
    labels = _LabelFeed(fraud_labels)
    pipeline = candidate.models.pipeline
    out = _Decisions(history.num_rows, len(pipeline.spec.names) if keep_features else 0)
    at = 0
    while at < len(replayed):
        books = labels.known_by(int(replayed_keys[at]))
        stop = max(at + 1, labels.cut(replayed_keys, at, min(at + batch_rows, len(replayed))))
        index = replayed[at:stop]
        rows_in = inputs.take(index)
        columns = archived_columns(rows_in)
        rows, admitted = pipeline.transform_parts(
            archived_events(rows_in, columns), rows_in["kafka_partition"].to_pylist(), states,
            [id_hash(t) for t in columns["transaction_id"]], books,
        )  # fmt: skip
        kept = [i for i, ok in enumerate(admitted) if ok]
        out.duplicates += len(admitted) - len(kept)
        if kept:
            fields = _rows_of(columns, kept, len(admitted))
            outcomes = candidate.rules.evaluate(
                RuleBatch.from_columns(fields, rows, pipeline.columns)
            )
            verdicts, scores = route_and_decide(
                candidate.models, rows, fields["card_token"], outcomes,
                np.array(fields["amount"], dtype=np.float64), degraded=False,
                policy=candidate.policy, explain=False,
            )  # fmt: skip
            out.record(index[kept], verdicts, outcomes, scores.score, rows)
        if progress is not None:
            progress(stop - at)
        at = stop
    return out.window(history, start, warmup=int(warm.sum()))


def _rows_of(columns: dict[str, list[Any]], kept: list[int], n: int) -> dict[str, list[Any]]:
    """`columns` at the rows in `kept` (all of them: the same lists)."""
    if len(kept) == n:
        return columns
    return {name: [values[i] for i in kept] for name, values in columns.items()}


class _Decisions:
    """The replay's decisions by history row (None: not decided, a duplicate or warm-up)."""

    def __init__(self, n: int, n_features: int) -> None:
        self.action: list[str | None] = [None] * n
        self.path: list[str | None] = [None] * n
        self.decisive: list[str | None] = [None] * n
        self.hits: list[tuple[str, ...]] = [()] * n
        self.score = np.full(n, np.nan)
        self.features = np.full((n, n_features), np.nan, np.float32) if n_features else None
        self.duplicates = 0

    def record(
        self, index: np.ndarray, verdicts: list[Verdict], outcomes: list[RuleOutcome],
        scores: list[float | None], rows: np.ndarray,
    ) -> None:  # fmt: skip
        for row, verdict, outcome, score in zip(index.tolist(), verdicts, outcomes, scores,
                                                strict=True):  # fmt: skip
            self.action[row] = verdict.action.value
            self.path[row] = verdict.path.value
            if outcome.action is not None:
                self.decisive[row] = next(h.rule_id for h in outcome.hits
                                          if h.action is outcome.action)  # fmt: skip
            self.hits[row] = tuple(h.rule_id for h in outcome.hits)
            if score is not None:
                self.score[row] = score
        if self.features is not None:
            self.features[index] = rows

    def window(self, history: pa.Table, start: datetime, *, warmup: int) -> Replayed:
        """The decided rows at or after `start`, in `history`'s order."""
        event_us = pc.cast(history["event_time"], pa.int64()).to_numpy()
        decided = np.array([a is not None for a in self.action], dtype=bool)
        rows = np.flatnonzero((event_us >= _micros(start)) & decided)
        pick = rows.tolist()
        return Replayed(
            history=history.take(rows), action=[self.action[i] or "" for i in pick],
            path=[self.path[i] or "" for i in pick], score=self.score[rows],
            decisive_rule=[self.decisive[i] for i in pick],
            rule_hits=[self.hits[i] for i in pick], warmup_rows=warmup,
            duplicates=self.duplicates,
            features=self.features[rows] if self.features is not None else None,
        )  # fmt: skip


def _micros(when: datetime) -> int:
    return (when - EPOCH) // timedelta(microseconds=1)


def _inputs(history: pa.Table) -> pa.Table:
    """The columns a replay reads (taking rows of these is cheaper than of all)."""
    return history.select([*TX_FIELDS, layout.LOCAL_OFFSET_COLUMN, "kafka_partition",
                           "kafka_offset"])  # fmt: skip


def _replay_keys(history: pa.Table) -> np.ndarray:
    """Per row, when the scorer handled it (µs): its decision's `decided_at`, or the
    broker time, or the event time, made non-decreasing in offset order per partition."""

    def micros(name: str) -> pa.ChunkedArray:
        return pc.cast(pc.cast(history[name], pa.timestamp("us", tz="UTC")), pa.int64())

    keys = pc.coalesce(micros("decided_at"), micros("kafka_timestamp"), micros("event_time"))
    key = keys.to_numpy().astype(np.int64)
    partition = history["kafka_partition"].to_numpy()
    offset = history["kafka_offset"].to_numpy()
    by_offset = np.lexsort((offset, partition))
    ordered = key[by_offset]
    bounds = np.flatnonzero(np.diff(partition[by_offset])) + 1
    for segment in np.split(np.arange(len(ordered)), bounds):
        ordered[segment] = np.maximum.accumulate(ordered[segment])
    key[by_offset] = ordered
    return np.asarray(key, dtype=np.int64)


def _replay_order(
    history: pa.Table, keys: np.ndarray, start: datetime
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices in the order to replay (by `keys`), and which rows only warm state up:
    in each partition, those before its first row at or after `start` (in offset order)."""
    partition = history["kafka_partition"].to_numpy()
    offset = history["kafka_offset"].to_numpy()
    event_us = pc.cast(history["event_time"], pa.int64()).to_numpy()
    in_window = event_us >= _micros(start)
    first = np.full(int(partition.max(initial=-1)) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, partition[in_window], offset[in_window])
    warm = offset < first[partition] if len(partition) else np.zeros(0, dtype=bool)
    return np.lexsort((offset, partition, keys)), warm


def _fold_warmup(
    history: pa.Table,
    index: np.ndarray,
    states: PartStates,
    progress: Callable[[int], None] | None,
) -> None:
    """Fold the warm-up rows into their partitions' parts (offset order per partition)."""
    partition = history["kafka_partition"].to_numpy()[index]
    offset = history["kafka_offset"].to_numpy()[index]
    by_partition = index[np.lexsort((offset, partition))]
    sorted_partition = partition[np.lexsort((offset, partition))]
    for p in np.unique(sorted_partition).tolist():
        rows = by_partition[sorted_partition == p]
        for at in range(0, len(rows), BATCH_ROWS):
            chunk = rows[at : at + BATCH_ROWS]
            rows_in = history.take(chunk)
            columns = archived_columns(rows_in)
            fold_parts(
                archived_events(rows_in, columns), rows_in["kafka_offset"].to_pylist(), p,
                states, [id_hash(t) for t in columns["transaction_id"]],
            )  # fmt: skip
            if progress is not None:
                progress(len(chunk))


class _LabelFeed:
    """Fraud labels handed to the replay as the scorer's label folder had them: a label
    counts from when it reached Kafka (else its `labelled_at`)."""

    def __init__(self, labels: pa.Table) -> None:
        arrived = pc.coalesce(
            pc.cast(pc.cast(labels["kafka_timestamp"], pa.timestamp("us", tz="UTC")), pa.int64()),
            pc.cast(labels["labelled_at"], pa.int64()),
        ).to_numpy()
        order = np.argsort(arrived, kind="stable")
        self._arrived = arrived[order]
        picked = labels.take(order)
        labelled_at = picked["labelled_at"].to_pylist()
        labelled = [at.timestamp() for at in labelled_at]
        paid = list(map(label_paid_at, picked["event_time"].to_pylist(), labelled_at))
        keys = map(label_keys, *(picked[c].to_pylist() for c in ("merchant_id", "device_id", "ip")))
        self._rows = list(zip(keys, paid, labelled, picked["transaction_id"].to_pylist(),
                              strict=True))  # fmt: skip
        self._next = 0
        self.books: dict[StateKey, LabelBook] = {}

    def known_by(self, micros: int) -> dict[StateKey, LabelBook]:
        """The books with every label that had arrived by `micros`."""
        end = int(np.searchsorted(self._arrived, micros, side="right"))
        for keys, paid_at, labelled_at, transaction_id in self._rows[self._next : end]:
            add_fraud_label(self.books, keys, paid_at, labelled_at, transaction_id)
        self._next = max(self._next, end)
        return self.books

    def cut(self, keys: np.ndarray, at: int, stop: int) -> int:
        """Where a batch starting at `at` must end so that no label arrives inside it."""
        if self._next >= len(self._arrived):
            return stop
        upcoming = self._arrived[self._next]
        return at + int(np.searchsorted(keys[at:stop], upcoming, side="left"))
