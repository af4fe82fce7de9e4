"""One micro-batch through the stages: validate, dedupe, state, features, rules, model,
decide, encode. Kafka is not here (see runner.py); Redis comes in through `ScorerState`
and `RedisLists`, and any Redis failure degrades the batch instead of failing it.

Every input record yields exactly one output for `transactions.dlq` or `fraud.decisions`
(plus a `fraud.review` case for reviews).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from fraudstream.contracts import (
    Action,
    DeadLetterReason,
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
    reason_fields,
)
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.compute import Event
from fraudstream.features.pipeline import StateCache, state_keys
from fraudstream.rules.context import ListHits, RuleBatch
from fraudstream.rules.engine import RulePack
from fraudstream.rules.lists import RedisLists
from fraudstream.scoring.decide import DecisionPolicy, Verdict
from fraudstream.scoring.models import ModelSet
from fraudstream.scoring.routing import BatchScores, route_and_decide
from fraudstream.scoring.state import (
    DECISIONS,
    DLQ,
    REVIEW,
    Loaded,
    Memo,
    Partition,
    ScorerState,
)

_log = logging.getLogger(__name__)
Output = tuple[str, bytes | None, bytes]  # (topic role, key, value)
_REVIEW = Action.REVIEW
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
    """What a scored batch writes to Redis: entity states, memos, last offsets."""

    states: StateCache
    memos: dict[str, Memo]
    last_offsets: dict[Partition, int]


@dataclass
class BatchResult:
    """Outputs in input order, and what the batch was like (for metrics)."""

    outputs: list[Output] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    dlq_reasons: list[str] = field(default_factory=list)
    replayed: int = 0
    degraded: bool = False  # entity state unavailable (not saved either)
    lists_unavailable: bool = False  # block/allow lists not checked (state still saved)
    shadow: list[tuple[float, float]] = field(default_factory=list)  # (champion, shadow)
    state_gaps: dict[Partition, int] = field(default_factory=dict)  # offsets Redis lost
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
    service: str = "scorer"
    clock: Callable[[], float] = time.time

    def process(
        self, records: Sequence[InputRecord], unsaved: PendingSave | None = None
    ) -> BatchResult:
        """Score one batch; its state writes are left in `result.pending_save` for `save`.

        `unsaved` is the previous batch's pending save when it may not have reached Redis
        yet: its states and memos stand in for what Redis returns. Redis failures degrade
        the batch; `StateFenced` (another instance owns one of its partitions) propagates:
        the batch must then be dropped, not committed."""
        result = BatchResult()
        outputs: list[Output | None] = [None] * len(records)
        mark = time.perf_counter()
        oks, errs = decode_transactions([r.value for r in records], self.max_message_bytes)
        oks = self._first_of_each_id(records, oks, errs)
        for index, rejection in errs:
            outputs[index] = self._dead_letter(records[index], rejection)
            result.dlq_reasons.append(rejection.reason.value)
        mark = _lap(result, "validate", mark)
        events = [Event.from_transaction(tx) for _, tx in oks]
        loaded = self._load_state(records, oks, events, result)
        if unsaved is not None and not result.degraded:
            _overlay(loaded, unsaved)
        fresh: list[tuple[int, Transaction]] = []
        fresh_events: list[Event] = []
        for (index, tx), event in zip(oks, events, strict=True):
            memo = loaded.memos.get(tx.transaction_id)
            record = records[index]
            if memo is None:
                fresh.append((index, tx))
                fresh_events.append(event)
            elif (memo.partition, memo.offset) == (record.partition, record.offset):
                result.replayed += 1  # a reprocessed batch: same outputs, nothing recounted
                outputs[index] = memo.outputs[0]
                result.outputs.extend(memo.outputs[1:])
            else:
                rejection = Rejection(
                    DeadLetterReason.DUPLICATE_ID,
                    f"transaction_id already decided (input offset {memo.offset})",
                )
                outputs[index] = self._dead_letter(record, rejection)
                result.dlq_reasons.append(DeadLetterReason.DUPLICATE_ID.value)
        mark = _lap(result, "state", mark)
        new_memos = self._score(
            records, fresh=fresh, events=fresh_events, states=loaded.states, outputs=outputs,
            result=result, mark=mark,
        )  # fmt: skip
        if self.state is not None and not result.degraded:
            result.pending_save = PendingSave(
                loaded.states, new_memos, partition_offsets(records, max)
            )
        result.outputs[:0] = [o for o in outputs if o is not None]
        return result

    def save(self, result: BatchResult) -> None:
        """Write the batch's states and memos (one script); it must precede the batch's
        commit. Redis failures degrade the batch (its updates are lost, the gap is
        detectable); `StateFenced` propagates (drop the batch, do not commit it)."""
        job = result.pending_save
        if job is None or self.state is None:
            return
        mark = time.perf_counter()
        try:
            self.state.save(job.states, job.memos, job.last_offsets)
        except InfrastructureUnavailable as exc:
            _log.warning("state not saved, batch continues: %s", exc)
            result.degraded = True
        _lap(result, "save", mark)

    def release(self, partitions: Sequence[Partition]) -> None:
        """Partitions were assigned or revoked: their state fences are claimed anew."""
        if self.state is not None:
            self.state.release(partitions)

    def _score(
        self,
        records: Sequence[InputRecord],
        *,
        fresh: list[tuple[int, Transaction]],
        events: list[Event],
        states: StateCache,
        outputs: list[Output | None],
        result: BatchResult,
        mark: float,
    ) -> dict[str, Memo]:
        if not fresh:
            return {}
        txs = [tx for _, tx in fresh]
        models = self.models()
        rows = models.pipeline.transform(events, states)
        mark = _lap(result, "features", mark)
        hits = self._list_hits(txs, result)
        rule_outcomes = self.rules().evaluate(RuleBatch(txs, rows, models.pipeline.columns, hits))
        mark = _lap(result, "rules", mark)
        amounts = np.array([tx.amount for tx in txs])
        verdicts, scores = route_and_decide(
            models, rows, [tx.card_token for tx in txs], rule_outcomes, amounts,
            degraded=result.degraded or result.lists_unavailable, policy=self.policy,
        )  # fmt: skip
        mark = _lap(result, "model", mark)
        memos: dict[str, Memo] = {}
        now = self.clock()
        for row, ((index, tx), verdict) in enumerate(zip(fresh, verdicts, strict=True)):
            record = records[index]
            produced = self._outputs(record, tx, verdict, scores, row, now)
            outputs[index] = produced[0]
            result.outputs.extend(produced[1:])
            memos[tx.transaction_id] = Memo(record.partition, record.offset, tuple(produced))
        result.verdicts = verdicts
        if scores.shadow_score is not None:
            result.shadow = [
                (score, shadow)
                for score, shadow in zip(scores.score, scores.shadow_score, strict=True)
                if score is not None
            ]
        _lap(result, "decide", mark)
        return memos

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
        records: Sequence[InputRecord],
        oks: list[tuple[int, Transaction]],
        events: list[Event],
        result: BatchResult,
    ) -> Loaded:
        empty = Loaded(StateCache(), {}, {})
        if self.state is None:
            result.degraded = True
            return empty
        keys = list(dict.fromkeys(k for event in events for k in state_keys(event)))
        try:
            loaded = self.state.load(
                keys, [tx.transaction_id for _, tx in oks], partition_offsets(records, min)
            )
        except InfrastructureUnavailable as exc:
            _log.warning("degraded batch: %s", exc)
            result.degraded = True
            return empty
        for partition, missing in loaded.gaps.items():
            _log.error("Redis lacks the state of %d committed offsets before this batch on %s: "
                       "features are missing those updates (README: lost Redis writes)",
                       missing, partition)  # fmt: skip
        result.state_gaps = loaded.gaps
        return loaded

    def _list_hits(self, txs: list[Transaction], result: BatchResult) -> ListHits:
        """Block/allow list hits; without them the batch is decided on the degraded path."""
        if self.lists is None:
            return {}
        breaker = self.state.breaker if self.state is not None else None
        if result.degraded or (breaker is not None and not breaker.allow()):
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
        oks: list[tuple[int, Transaction]],
        errs: list[tuple[int, Rejection]],
    ) -> list[tuple[int, Transaction]]:
        seen: dict[str, int] = {}
        kept = []
        for index, tx in oks:
            if tx.transaction_id in seen:
                errs.append((index, Rejection(
                    DeadLetterReason.DUPLICATE_ID,
                    f"transaction_id repeated in the same batch (first at offset "
                    f"{records[seen[tx.transaction_id]].offset})",
                )))  # fmt: skip
            else:
                seen[tx.transaction_id] = index
                kept.append((index, tx))
        return kept

    def _dead_letter(self, record: InputRecord, rejection: Rejection) -> Output:
        letter = dead_letter(
            rejection, topic=record.topic, partition=record.partition, offset=record.offset,
            timestamp_ms=record.timestamp_ms, key=record.key, value=record.value,
            headers=record.headers, service=self.service, now=datetime.now(UTC),
        )  # fmt: skip
        return (DLQ, record.key, encode(letter))


def _overlay(loaded: Loaded, unsaved: PendingSave) -> None:
    """Put the previous batch's unsaved states and memos over what Redis returned (they are
    newer). States are copied: this batch updates them while the previous one is saved."""
    for key in loaded.states.keys() & unsaved.states.keys():
        loaded.states[key] = list(unsaved.states[key])
    for tx_id, memo in unsaved.memos.items():
        loaded.memos.setdefault(tx_id, memo)


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
