"""Labels joined to their decisions by transaction id, despite label delay.

A decision is held (transaction id -> `Held`) until its label arrives or `ttl_days` of
event time pass; then it is settled: a decline nobody labelled fraud by then counts as
legitimate for precision. A label that arrives before its decision waits
`pending_minutes`; one whose decision never comes (or expired) is an orphan. The maps
are plain `MutableMapping`s: dicts in tests, faust tables (changelogged, so a restarted
monitor keeps waiting) in the service. Values are JSON lists so both can hold them.

The clock is event time: the latest `decided_at` seen, so replaying a stream gives the
same joins and settlements whatever the wall clock says.
"""

from __future__ import annotations

import heapq
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from fraudstream.drift.config import JoinConfig
from fraudstream.features.state import DAY

# A held decision [decided_at, version, score, action, verdict] or a waiting label
# [labelled_at, fraud]: JSON lists, as a faust table stores them.
Held = list[Any]
APPROVE, REVIEW, DECLINE = 0, 1, 2  # action codes held per decision
UNLABELLED, FRAUD, LEGIT = 0, 1, 2  # verdict codes held per decision


@dataclass(frozen=True, slots=True)
class Seen:
    """A decision as the monitor uses it."""

    transaction_id: str
    at: float  # decided_at, epoch seconds
    version: str
    score: float
    action: int  # APPROVE, REVIEW or DECLINE


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision and what became of it: its label, or settled unlabelled at expiry."""

    version: str
    action: int
    score: float
    fraud: bool
    at: float  # when it became known (event time)
    labelled: bool  # False: settled without a label (an unlabelled decline)


@dataclass
class JoinCounts:
    joined: int = 0
    early: int = 0  # label before its decision, joined when the decision came
    orphan: int = 0  # no decision within the wait (never seen, or expired first)
    duplicate: int = 0  # a second label for a decision already labelled
    settled: int = 0  # declines settled unlabelled at expiry
    evicted: int = 0  # decisions dropped before their TTL to stay under max_decisions


class LabelJoin:
    """Decisions held for their labels, and labels waiting for their decisions."""

    def __init__(
        self, config: JoinConfig, decisions: MutableMapping[str, Held] | None = None,
        pending: MutableMapping[str, Held] | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.decisions: MutableMapping[str, Held] = {} if decisions is None else decisions
        self.pending: MutableMapping[str, Held] = {} if pending is None else pending
        self.counts = JoinCounts()
        self.now = 0.0
        self._ttl = config.ttl_days * DAY
        self._wait = config.pending_minutes * 60.0
        self._order: list[tuple[float, str]] = []  # (decided_at, id): a heap, oldest first
        self._pending_order: list[tuple[float, str]] = []
        self.rebuild()

    def rebuild(self) -> None:
        """Expiry order from the maps' contents (after a restart restored them)."""
        self._order = [(float(v[0]), k) for k, v in self.decisions.items()]
        heapq.heapify(self._order)
        self._pending_order = [(float(v[0]), k) for k, v in self.pending.items()]
        heapq.heapify(self._pending_order)

    def add_decision(self, seen: Seen) -> Outcome | None:
        """Hold a decision; its outcome at once if its label was waiting."""
        self.now = max(self.now, seen.at)
        waiting = self.pending.pop(seen.transaction_id, None)
        verdict = UNLABELLED
        outcome = None
        if waiting is not None:
            labelled_at, fraud = float(waiting[0]), bool(waiting[1])
            verdict = FRAUD if fraud else LEGIT
            self.counts.early += 1
            outcome = Outcome(seen.version, seen.action, seen.score, fraud,
                              max(labelled_at, seen.at), True)  # fmt: skip
        if seen.transaction_id not in self.decisions:
            heapq.heappush(self._order, (seen.at, seen.transaction_id))
        self.decisions[seen.transaction_id] = [seen.at, seen.version, seen.score, seen.action,
                                               verdict]  # fmt: skip
        return outcome

    def add_label(self, transaction_id: str, fraud: bool, labelled_at: float) -> Outcome | None:
        """The decision's outcome, if it is held and not labelled yet; else the label
        waits (decision not seen yet) or is counted as a duplicate."""
        held = self.decisions.get(transaction_id)
        if held is None:
            if transaction_id in self.pending:
                self.counts.duplicate += 1
            else:
                self.pending[transaction_id] = [labelled_at, fraud]
                heapq.heappush(self._pending_order, (labelled_at, transaction_id))
            return None
        at, version, score, action, verdict = held
        if verdict != UNLABELLED:
            self.counts.duplicate += 1
            return None
        self.decisions[transaction_id] = [at, version, score, action, FRAUD if fraud else LEGIT]
        self.counts.joined += 1
        return Outcome(str(version), int(action), float(score), fraud,
                       max(labelled_at, float(at)), True)  # fmt: skip

    def expire(self) -> list[Outcome]:
        """Settle decisions past their TTL (or beyond `max_decisions`) and give up on labels
        that waited too long; the unlabelled declines' outcomes (legitimate)."""
        settled: list[Outcome] = []
        order, decisions = self._order, self.decisions
        while order and (order[0][0] < self.now - self._ttl
                         or len(decisions) > self.config.max_decisions):  # fmt: skip
            at, txid = heapq.heappop(order)
            held = decisions.get(txid)
            if held is None or float(held[0]) != at:
                continue  # replaced by a later copy of the decision, still queued
            del decisions[txid]
            if at >= self.now - self._ttl:
                self.counts.evicted += 1
                continue
            _, version, score, action, verdict = held
            if action == DECLINE and verdict == UNLABELLED:
                self.counts.settled += 1
                settled.append(Outcome(str(version), DECLINE, float(score), False,
                                       at + self._ttl, False))  # fmt: skip
        pending = self._pending_order
        while pending and pending[0][0] < self.now - self._wait:
            _, txid = heapq.heappop(pending)
            if self.pending.pop(txid, None) is not None:
                self.counts.orphan += 1
        return settled
