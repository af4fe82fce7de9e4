"""One micro-batch through the stages: validate, dedupe, state, features, rules, model,
decide, encode. Kafka is not here (see runner.py); Redis comes in through `ScorerState`
and `RedisLists`, and any Redis failure degrades the batch instead of failing it.

Every input record yields exactly one output for `transactions.dlq` or `fraud.decisions`
(plus a `fraud.review` case for reviews).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from fraudstream.contracts import (
    Action,
    DeadLetterReason,
    DecisionPath,
    Reason,
    ReasonFields,
    ReasonSource,
    Rejection,
    ReviewCase,
    Transaction,
    dead_letter,
    decode_transactions,
    encode,
    encode_decision,
    mask_pan_bytes,
    reason_fields,
)
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import PartKey, PartStates, StateCache, state_keys
from fraudstream.features.state import id_hash
from fraudstream.rules.context import ListHits, RuleBatch
from fraudstream.rules.engine import RulePack
from fraudstream.rules.lists import RedisLists
from fraudstream.scoring.decide import DecisionPolicy, Verdict
from fraudstream.scoring.isolation import RecordId
from fraudstream.scoring.models import ModelSet
from fraudstream.scoring.routing import BatchScores, route_and_decide
from fraudstream.scoring.state import Checkpoint, Loaded, PartWrite, ScorerState

_log = logging.getLogger(__name__)
Output = tuple[str, bytes | None, bytes]  # (topic role, key, value)
Partition = tuple[str, int]  # (topic, partition)
DECISIONS, REVIEW, DLQ = "decisions", "review", "dlq"  # topic roles of the outputs
_REVIEW = Action.REVIEW
_ML = DecisionPath.ML
# Largest output value: the producer's default message.max.bytes (1,000,000) less room for
# the key, headers and record overhead.
OUTPUT_MAX_BYTES = 990_000
RECORD_OVERHEAD_BYTES = 1024  # key, headers and record batch framing, generously
POISON_LETTER_BYTES = 4096
_CONTRIBUTION_DETAIL = "LightGBM log-odds path contribution"


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed Kafka record, as plain data."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(frozen=True)
class PendingSave:
    """What a scored batch writes to Redis after its commit: the entity parts it changed
    (with the last offset folded into each) and its partitions' checkpoint moves."""

    parts: dict[PartKey, tuple[list[float], int]]
    moves: dict[int, PartWrite]


@dataclass
class BatchResult:
    """Outputs in input order, and what the batch was like (for metrics)."""

    outputs: list[Output] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    dlq_reasons: list[str] = field(default_factory=list)
    degraded: bool = False  # some events were scored without their entity state
    degraded_partitions: set[int] = field(default_factory=set)  # their updates come by replay
    lost: set[int] = field(default_factory=set)  # Redis no longer had the expected state
    unsaved: set[int] = field(default_factory=set)  # partitions whose save failed or was refused
    lists_unavailable: bool = False  # block/allow lists not checked (state still saved)
    shadow: list[tuple[float, float]] = field(default_factory=list)  # (champion, shadow)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    committed_at: float | None = None  # wall clock when its Kafka transaction committed
    pending_save: PendingSave | None = None  # see BatchScorer.save


@dataclass
class BatchScorer:
    """The scorer's stages for one batch; dependencies are injected."""

    rules: Callable[[], RulePack]
    models: Callable[[], ModelSet]
    state: ScorerState | None
    lists: RedisLists | None
    policy: DecisionPolicy = field(default_factory=DecisionPolicy)
    max_message_bytes: int = 64 * 1024
    # Largest value per output role; the loop sets them from the topics' max.message.bytes.
    output_limits: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((DECISIONS, REVIEW, DLQ), OUTPUT_MAX_BYTES)
    )
    service: str = "scorer"
    clock: Callable[[], float] = time.time

    def process(
        self,
        records: Sequence[InputRecord],
        synced: Mapping[int, Checkpoint] | None = None,
        unsaved: PendingSave | None = None,
        poison: Set[RecordId] = frozenset(),
    ) -> BatchResult:
        """Score one batch; its state writes are left in `result.pending_save` for `save`.

        `synced` maps the partitions whose Redis state this instance can build on to the
        checkpoint their next save expects; events of other partitions (and all of them when
        Redis fails) are scored degraded, on event-only features, and their state updates
        are left to a replay of the log. `unsaved` is the previous batch's pending save,
        whose parts stand in for what Redis returns (they may not have landed yet).
        Records in `poison` (their batches failed until they stood alone) are scored (their
        state counts, as a replay counts it) but emit one small dead letter instead."""
        result = BatchResult()
        outputs: list[Output | None] = [None] * len(records)
        mark = time.perf_counter()
        oks, errs = decode_transactions(
            [r.value for r in records], self.max_message_bytes,
            timestamps_ms=[r.timestamp_ms for r in records],
        )  # fmt: skip
        for index, rejection in errs:
            outputs[index] = self._dead_letter(records[index], rejection)
            result.dlq_reasons.append(rejection.reason.value)
        mark = _lap(result, "validate", mark)
        synced = dict(synced or {})
        full = [(i, tx) for i, tx in oks if records[i].partition in synced]
        loaded = self._load_state(full, synced, unsaved, result) if full else None
        if loaded is None:
            synced = {}
        full = [(i, tx) for i, tx in full if records[i].partition in synced]
        rest = [(i, tx) for i, tx in oks if records[i].partition not in synced]
        mark = _lap(result, "state", mark)
        if loaded is not None:
            if unsaved is not None:
                _overlay(loaded.states, unsaved)
            result.pending_save = self._score_full(
                records, full, synced, loaded, outputs, result, poison
            )
        if rest:
            self._score_degraded(records, rest, outputs, result, poison)
        # "decide": what the batch took after the state read, less its features, rules and
        # model stages (timed inside): dedupe, encoding, dead letters.
        inner = sum(result.stage_seconds.get(s, 0.0) for s in ("features", "rules", "model"))
        result.stage_seconds["decide"] = max(time.perf_counter() - mark - inner, 0.0)
        for index, record in enumerate(records):
            if (record.topic, record.partition, record.offset) in poison:
                outputs[index] = self._poison_letter(record)
                result.dlq_reasons.append(DeadLetterReason.POISON.value)
        result.outputs[:0] = [o for o in outputs if o is not None]
        return result

    def save(self, result: BatchResult) -> None:
        """Write the batch's parts and move its checkpoints, after its commit. A failed or
        refused partition is recorded in `result.unsaved`: its updates are replayed later."""
        job = result.pending_save
        if job is None or self.state is None or not job.moves:
            return
        mark = time.perf_counter()
        try:
            refused = self.state.save(job.parts, job.moves)
        except InfrastructureUnavailable as exc:
            _log.warning("state of partitions %s not saved (replayed later): %s",
                         sorted(job.moves), exc)  # fmt: skip
            result.unsaved |= set(job.moves)
        else:
            if refused:
                _log.warning(
                    "state of partitions %s refused: Redis moved on without this instance "
                    "(a rebuild, a new owner or lost data)", sorted(refused),
                )  # fmt: skip
            result.unsaved |= refused
        _lap(result, "save", mark)

    def _score_full(  # noqa: PLR0917 - one call site
        self,
        records: Sequence[InputRecord],
        items: list[tuple[int, Transaction]],
        synced: Mapping[int, Checkpoint],
        loaded: Loaded,
        outputs: list[Output | None],
        result: BatchResult,
        poison: Set[RecordId],
    ) -> PendingSave:
        """Features from the entity parts; duplicates (by the card's recent ids) are
        dead-lettered and change nothing."""
        models = self.models()
        events = [Event.from_transaction(tx) for _, tx in items]
        partitions = [records[i].partition for i, _ in items]
        txids = [id_hash(tx.transaction_id) for _, tx in items]
        states = loaded.states
        started = time.perf_counter()
        rows, admitted = models.pipeline.transform_parts(
            events, partitions, states, txids, loaded.labels
        )
        _lap(result, "features", started)
        parts: dict[PartKey, tuple[list[float], int]] = {}
        kept: list[tuple[int, Transaction]] = []
        for (index, tx), event, partition, ok in zip(items, events, partitions, admitted,
                                                     strict=True):  # fmt: skip
            if not ok:
                rejection = Rejection(DeadLetterReason.DUPLICATE_ID,
                                      "transaction_id already decided for this card")  # fmt: skip
                outputs[index] = self._dead_letter(records[index], rejection)
                result.dlq_reasons.append(DeadLetterReason.DUPLICATE_ID.value)
                continue
            kept.append((index, tx))
            offset = records[index].offset
            for entity, entity_id in state_keys(event):
                parts[(entity, entity_id, partition)] = (
                    states[(entity, entity_id)][partition], offset,
                )  # fmt: skip
        moves = {
            partition: PartWrite(synced[partition], last + 1)
            for (_topic, partition), last in partition_offsets(records, max).items()
            if partition in synced
        }
        self._score(records, kept, rows, outputs, result, degraded=False, poison=poison)
        return PendingSave(parts, moves)

    def _score_degraded(
        self,
        records: Sequence[InputRecord],
        items: list[tuple[int, Transaction]],
        outputs: list[Output | None],
        result: BatchResult,
        poison: Set[RecordId],
    ) -> None:
        """Event-only features (no entity history); only in-batch duplicates are caught."""
        items = self._first_of_each_id(records, items, outputs, result)
        events = [Event.from_transaction(tx) for _, tx in items]
        rows = self.models().pipeline.transform(events, StateCache())
        result.degraded = True
        result.degraded_partitions |= {records[i].partition for i, _ in items}
        self._score(records, items, rows, outputs, result, degraded=True, poison=poison)

    def _score(
        self,
        records: Sequence[InputRecord],
        items: list[tuple[int, Transaction]],
        rows: np.ndarray,
        outputs: list[Output | None],
        result: BatchResult,
        *,
        degraded: bool,
        poison: Set[RecordId],
    ) -> None:
        if not items:
            return
        txs = [tx for _, tx in items]
        models = self.models()
        mark = time.perf_counter()
        hits = self._list_hits(txs, result, degraded=degraded)
        rule_outcomes = self.rules().evaluate(RuleBatch(txs, rows, models.pipeline.columns, hits))
        mark = _lap(result, "rules", mark)
        amounts = np.array([tx.amount for tx in txs])
        verdicts, scores = route_and_decide(
            models, rows, [tx.card_token for tx in txs], rule_outcomes, amounts,
            degraded=degraded or result.lists_unavailable, policy=self.policy,
        )  # fmt: skip
        _lap(result, "model", mark)
        now = self.clock()
        for row, ((index, tx), verdict) in enumerate(zip(items, verdicts, strict=True)):
            record = records[index]
            if (record.topic, record.partition, record.offset) in poison:
                continue  # its dead letter is made by `process`
            produced = self._bounded(record, self._outputs(record, tx, verdict, scores, row, now))
            outputs[index] = produced[0]
            result.outputs.extend(produced[1:])
        result.verdicts += verdicts
        if scores.shadow_score is not None:
            result.shadow += [
                (score, shadow)
                for score, shadow in zip(scores.score, scores.shadow_score, strict=True)
                if score is not None
            ]

    def _outputs(  # noqa: PLR0917 - one call site
        self, record: InputRecord, tx: Transaction, verdict: Verdict, scores: BatchScores,
        row: int, now: float,
    ) -> list[Output]:  # fmt: skip
        contributions = scores.contributions.get(row, ())
        shadow = scores.shadow_score[row] if scores.shadow_score is not None else None
        decided_at = datetime.fromtimestamp(now, UTC)
        arrival = (record.timestamp_ms or now * 1000) / 1000
        decision = encode_decision(
            transaction_id=tx.transaction_id, card_token=tx.card_token, action=verdict.action,
            score=scores.score[row], member_scores=scores.members[row],
            reasons=[
                *(reason_fields(r) for r in verdict.reasons),
                *(_contribution(name, value) for name, value in contributions),
            ],
            model_version=scores.model_version[row], shadow_model_version=scores.shadow_version,
            shadow_score=shadow, path=verdict.path, event_time=tx.event_time,
            decided_at=decided_at, latency_ms=max(0.0, (now - arrival) * 1000),
            monitored=scores.monitored.get(row) if verdict.path is _ML else None,
        )  # fmt: skip
        produced: list[Output] = [(DECISIONS, tx.card_token.encode(), decision)]
        if verdict.action is _REVIEW:
            reasons = [*verdict.reasons, *(
                Reason.model_construct(code="TOP_FEATURE", source=ReasonSource.MODEL,
                                       detail=_CONTRIBUTION_DETAIL, feature=name,
                                       contribution=value)
                for name, value in contributions
            )]  # fmt: skip
            # model_construct: every value comes from validated input or our own typed code.
            case = ReviewCase.model_construct(
                transaction=tx, action_suggested=verdict.action, score=scores.score[row],
                member_scores=scores.members[row], reasons=reasons,
                contributions=dict(contributions), model_version=scores.model_version[row],
                path=verdict.path, created_at=decided_at,
            )  # fmt: skip
            produced.append((REVIEW, tx.transaction_id.encode(), encode(case)))
        return produced

    def _load_state(
        self,
        items: list[tuple[int, Transaction]],
        synced: dict[int, Checkpoint],
        unsaved: PendingSave | None,
        result: BatchResult,
    ) -> Loaded | None:
        """The parts of the batch's entities; None when Redis failed (the batch degrades).
        A synced partition whose checkpoint in Redis is not the one expected (Redis lost
        data, a rebuild or another owner moved it) is dropped from `synced`."""
        if self.state is None:
            return None
        keys = list(dict.fromkeys(
            k for _, tx in items for k in state_keys(Event.from_transaction(tx))
        ))  # fmt: skip
        try:
            loaded = self.state.load(keys)
        except InfrastructureUnavailable as exc:
            _log.warning("degraded batch: %s", exc)
            return None
        for partition, expected in list(synced.items()):
            allowed = {expected.offset}
            if unsaved is not None and partition in unsaved.moves:
                allowed.add(unsaved.moves[partition].expected.offset)  # not landed yet
            found = loaded.checkpoints.get(partition)
            if found is None or found.epoch != expected.epoch or found.offset not in allowed:
                _log.error("Redis state of partition %d is not where this instance left it "
                           "(expected %s, found %s): catching up from the log",
                           partition, expected, found)  # fmt: skip
                del synced[partition]
                result.lost.add(partition)
        return loaded

    def _list_hits(
        self, txs: list[Transaction], result: BatchResult, *, degraded: bool
    ) -> ListHits:
        """Block/allow list hits; without them the batch is decided on the degraded path."""
        if self.lists is None:
            return {}
        breaker = self.state.breaker if self.state is not None else None
        if degraded or (breaker is not None and not breaker.allow()):
            result.lists_unavailable = True
            return {}
        try:
            return self.lists.hits(txs)
        except InfrastructureUnavailable as exc:
            _log.warning("lists unavailable, batch degraded: %s", exc)
            if breaker is not None:
                breaker.failure()
            result.lists_unavailable = True
            return {}

    def _first_of_each_id(
        self,
        records: Sequence[InputRecord],
        items: list[tuple[int, Transaction]],
        outputs: list[Output | None],
        result: BatchResult,
    ) -> list[tuple[int, Transaction]]:
        seen: dict[str, int] = {}
        kept = []
        for index, tx in items:
            if tx.transaction_id in seen:
                rejection = Rejection(
                    DeadLetterReason.DUPLICATE_ID,
                    f"transaction_id repeated in the same batch (first at offset "
                    f"{records[seen[tx.transaction_id]].offset})",
                )
                outputs[index] = self._dead_letter(records[index], rejection)
                result.dlq_reasons.append(DeadLetterReason.DUPLICATE_ID.value)
            else:
                seen[tx.transaction_id] = index
                kept.append((index, tx))
        return kept

    def _dead_letter(self, record: InputRecord, rejection: Rejection) -> Output:
        """The DLQ record, bounded to what the topic accepts, under a PAN-masked key."""
        letter = dead_letter(
            rejection, topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp_ms=record.timestamp_ms, key=record.key, value=record.value,
            headers=record.headers, service=self.service, now=datetime.now(UTC),
            max_bytes=self.output_limits[DLQ],
        )  # fmt: skip
        return (DLQ, mask_pan_bytes(record.key), encode(letter))

    def _poison_letter(self, record: InputRecord) -> Output:
        """A small dead letter (original bytes cut to 4 KB) for a record set aside."""
        rejection = Rejection(DeadLetterReason.POISON,
                              "every batch holding this record failed to commit, also alone: "
                              "set aside so its partition moves on")  # fmt: skip
        letter = dead_letter(
            rejection, topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp_ms=record.timestamp_ms, key=record.key, value=record.value,
            headers=record.headers, service=self.service, now=datetime.now(UTC),
            max_bytes=POISON_LETTER_BYTES,
        )  # fmt: skip
        return (DLQ, mask_pan_bytes(record.key), encode(letter))

    def _bounded(self, record: InputRecord, produced: list[Output]) -> list[Output]:
        """Outputs too large for their topic become dead letters that say so."""
        limits = self.output_limits
        if all(len(value) <= limits[role] for role, _key, value in produced):
            return produced
        bounded: list[Output] = []
        for role, key, value in produced:
            limit = limits[role]
            if len(value) <= limit:
                bounded.append((role, key, value))
                continue
            _log.error("%s output of input %s[%d]@%d is %d bytes (limit %d): dead-lettered",
                       role, record.topic, record.partition, record.offset, len(value),
                       limit)  # fmt: skip
            rejection = Rejection(DeadLetterReason.OUTPUT_TOO_LARGE,
                                  f"its {role} record would be {len(value)} bytes, over the "
                                  f"{limit}-byte limit")  # fmt: skip
            bounded.append(self._dead_letter(record, rejection))
        return bounded


def _overlay(states: PartStates, unsaved: PendingSave) -> None:
    """Put the previous batch's unsaved parts over what Redis returned (they are newer).
    Parts are copied: this batch updates them while the previous one is saved."""
    for (entity, entity_id, partition), (part, _offset) in unsaved.parts.items():
        parts = states.get((entity, entity_id))
        if parts is None:
            parts = states[(entity, entity_id)] = {}
        parts[partition] = list(part)


def _contribution(feature: str, value: float) -> ReasonFields:
    return {"code": "TOP_FEATURE", "source": "model", "detail": _CONTRIBUTION_DETAIL,
            "feature": feature, "contribution": value}  # fmt: skip


def partition_offsets(
    records: Sequence[InputRecord], pick: Callable[[int, int], int]
) -> dict[Partition, int]:
    """The first (`min`) or last (`max`) offset of each partition in the batch."""
    found: dict[Partition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        found[key] = pick(found.get(key, record.offset), record.offset)
    return found


def _lap(result: BatchResult, stage: str, since: float) -> float:
    now = time.perf_counter()
    result.stage_seconds[stage] = result.stage_seconds.get(stage, 0.0) + now - since
    return now
