"""The one feature pipeline: events plus entity states in, a float32 matrix out.

Training replays history through `replay` with states in a dict; the scorer loads the
batch's states from Redis (`scoring.state.ScorerState`, split by input partition), calls
`FeaturePipeline.transform_parts` (the same maths) and writes them back. Fraud labels are
kept per merchant, device and IP with their label times (`features.labels`): a payment
sees only the labels known at its own time, so neither path can see a label early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime

import numpy as np

from fraudstream.contracts import Label, Transaction, Verdict
from fraudstream.features import compute
from fraudstream.features.compute import Event
from fraudstream.features.labels import LabelBook
from fraudstream.features.spec import PRODUCER_PREFIX, FeatureSpec, catalog
from fraudstream.features.state import LAYOUTS, Entity, Layout, combine, id_hash

StateKey = tuple[Entity, str]
PartKey = tuple[Entity, str, int]  # an entity's part written by one input partition
_EntityMaths = Callable[..., list[float]]  # (state, event, *extra) -> feature values
LabelBooks = Mapping[StateKey, LabelBook]  # merchant, device or IP -> its fraud labels


class StateCache(dict[StateKey, list[float]]):
    """Entity states by key; an unknown key starts empty."""

    def __missing__(self, key: StateKey) -> list[float]:
        state = LAYOUTS[key[0]].empty()
        self[key] = state
        return state


class PartStates(dict[StateKey, dict[int, list[float]]]):
    """Entity states split by input partition: key -> partition -> that partition's part.
    `offsets` holds, for parts read from storage, the last input offset folded into each."""

    def __init__(self) -> None:
        super().__init__()
        self.offsets: dict[PartKey, int] = {}

    def own(self, key: StateKey, partition: int) -> list[float]:
        """The part `partition` writes (empty when it has none yet)."""
        parts = self.get(key)
        if parts is None:
            parts = self[key] = {}
        part = parts.get(partition)
        if part is None:
            part = parts[partition] = LAYOUTS[key[0]].empty()
        return part


def state_keys(ev: Event) -> list[StateKey]:
    """The entity states one event reads and updates."""
    keys: list[StateKey] = [(Entity.CARD, ev.card), (Entity.MERCHANT, ev.merchant)]
    if ev.device is not None:
        keys.append((Entity.DEVICE, ev.device))
    if ev.ip is not None:
        keys.append((Entity.IP, ev.ip))
    return keys


class FeaturePipeline:
    """Computes the spec's features for a sequence of events, updating entity states."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.columns = {name: i for i, name in enumerate(spec.names)}
        computed = [n for n in spec.names if not n.startswith(PRODUCER_PREFIX)]
        producer = [n for n in spec.names if n.startswith(PRODUCER_PREFIX)]
        if spec.names != (*computed, *producer):
            raise ValueError("producer features must come after the computed ones")
        everything = catalog()
        unknown = [n for n in computed if n not in everything]
        if unknown:
            raise ValueError(
                f"features {unknown} are not computed by this version of fraudstream (a "
                "model trained by an older one?): train a new model version"
            )
        at = [everything.index(n) for n in computed]
        self.delay = spec.label_delay_days
        # The catalog in its own order (the scorer's case) needs no picking.
        self._pick: Callable[[list[float]], list[float]] | None = (
            None if at == list(range(len(everything))) else (lambda row: [row[i] for i in at])
        )
        self._producer = [
            (n.removeprefix(PRODUCER_PREFIX), spec.producer_default(n)) for n in producer
        ]

    def transform(
        self, events: Sequence[Event], states: StateCache, labels: LabelBooks | None = None
    ) -> np.ndarray:
        """One row per event, in order; each event sees the states left by the previous,
        and the fraud labels in `labels` known at its time."""
        rows = []
        books = labels or {}
        delay = self.delay
        for ev in events:
            device = (Entity.DEVICE, ev.device or "")
            ip = (Entity.IP, ev.ip or "")
            merchant = (Entity.MERCHANT, ev.merchant)
            row = [
                *compute.event_features(ev),
                *compute.card_features(states[(Entity.CARD, ev.card)], ev),
                *compute.merchant_features(states[merchant], ev, books.get(merchant), delay),
                *compute.shared_entity_features(
                    Entity.DEVICE, states[device] if ev.device is not None else None, ev,
                    books.get(device), delay,
                ),
                *compute.shared_entity_features(
                    Entity.IP, states[ip] if ev.ip is not None else None, ev, books.get(ip), delay
                ),
            ]  # fmt: skip
            rows.append(self._finish(row, ev))
        if not rows:
            return np.empty((0, len(self.spec.names)), dtype=np.float32)
        return np.array(rows, dtype=np.float32)

    def _finish(self, row: list[float], ev: Event) -> list[float]:
        """The spec's columns of a computed row, then the producer's features."""
        if self._pick is not None:
            row = self._pick(row)
        for name, default in self._producer:
            supplied = ev.producer.get(name) if ev.producer else None
            row.append(default if supplied is None else supplied)
        return row

    def transform_parts(
        self,
        events: Sequence[Event],
        partitions: Sequence[int],
        states: PartStates,
        transaction_ids: Sequence[float] | None = None,
        labels: LabelBooks | None = None,
    ) -> tuple[np.ndarray, list[bool]]:
        """Like `transform`, with states split by input partition: each event reads the
        combination of its entities' parts and updates only its own partition's part
        (the same maths on the part alone, so a part is a function of its partition's log).

        With `transaction_ids` (`id_hash`es), an event whose id is among its card part's
        latest ones is a duplicate: it changes nothing and gets no row. Returns the rows
        of the admitted events and, per event, whether it was admitted."""
        rows: list[list[float]] = []
        admitted: list[bool] = []
        seen = _CARD.slot("transactions")
        books = labels or {}
        delay = self.delay
        for i, ev in enumerate(events):
            partition = partitions[i]
            card = states.own((Entity.CARD, ev.card), partition)
            txid = transaction_ids[i] if transaction_ids is not None else None
            if txid is not None and compute.seen_recently(card, seen, txid):
                admitted.append(False)
                continue
            merchant = (Entity.MERCHANT, ev.merchant)
            device = (Entity.DEVICE, ev.device or "")
            ip = (Entity.IP, ev.ip or "")
            row = [
                *compute.event_features(ev),
                *_on_parts(compute.card_features, states, (Entity.CARD, ev.card), partition, ev),
                *_on_parts(compute.merchant_features, states, merchant, partition, ev,
                           books.get(merchant), delay),
                *(_on_parts(_DEVICE, states, device, partition, ev, books.get(device), delay)
                  if ev.device is not None else _NO_DEVICE),
                *(_on_parts(_IP, states, ip, partition, ev, books.get(ip), delay)
                  if ev.ip is not None else _NO_IP),
            ]  # fmt: skip
            if txid is not None:
                compute.remember(card, seen.offset, seen.size, txid, ev.ts)
            rows.append(self._finish(row, ev))
            admitted.append(True)
        if not rows:
            return np.empty((0, len(self.spec.names)), dtype=np.float32), admitted
        return np.array(rows, dtype=np.float32), admitted


_CARD: Layout = LAYOUTS[Entity.CARD]
_NO_DEVICE = compute.shared_entity_features(Entity.DEVICE, None, None)  # type: ignore[arg-type]
_NO_IP = compute.shared_entity_features(Entity.IP, None, None)  # type: ignore[arg-type]


def _DEVICE(state: list[float], ev: Event, *labels: object) -> list[float]:
    return compute.shared_entity_features(Entity.DEVICE, state, ev, *labels)  # type: ignore[arg-type]


def _IP(state: list[float], ev: Event, *labels: object) -> list[float]:
    return compute.shared_entity_features(Entity.IP, state, ev, *labels)  # type: ignore[arg-type]


def fold_parts(
    events: Sequence[Event],
    offsets: Sequence[int],
    partition: int,
    states: PartStates,
    transaction_ids: Sequence[float],
) -> list[bool]:
    """Replay one partition's events into its own parts (no features): the state updates
    `transform_parts` makes, skipping what a part already holds. A part whose stored offset
    is at or past an event's was written after it (a write that reached some Redis nodes
    and not others); card parts are written last, so a card part past the event means
    the whole event is in. Returns, per event, whether it was admitted (not a duplicate)."""
    done = states.offsets
    seen = _CARD.slot("transactions")
    admitted = []
    for ev, offset, txid in zip(events, offsets, transaction_ids, strict=True):
        card_key = (Entity.CARD, ev.card)
        card = states.own(card_key, partition)
        if done.get((*card_key, partition), -1) >= offset or compute.seen_recently(
            card, seen, txid
        ):
            admitted.append(False)
            continue
        for key, maths in _entity_maths(ev):
            if done.get((*key, partition), -1) < offset:
                maths(states.own(key, partition), ev)
        compute.remember(card, seen.offset, seen.size, txid, ev.ts)
        admitted.append(True)
    return admitted


def _entity_maths(ev: Event) -> list[tuple[StateKey, _EntityMaths]]:
    """Each entity an event updates, with its maths, card last."""
    out: list[tuple[StateKey, _EntityMaths]] = [
        ((Entity.MERCHANT, ev.merchant), compute.merchant_features)
    ]
    if ev.device is not None:
        out.append(((Entity.DEVICE, ev.device), _DEVICE))
    if ev.ip is not None:
        out.append(((Entity.IP, ev.ip), _IP))
    out.append(((Entity.CARD, ev.card), compute.card_features))
    return out


def _on_parts(
    maths: _EntityMaths, states: PartStates, key: StateKey, partition: int, ev: Event,
    *extra: object,
) -> list[float]:  # fmt: skip
    """The entity's features from all its parts (`extra`: its label book and the delay);
    only `partition`'s part is updated."""
    own = states.own(key, partition)
    parts = states[key]
    if len(parts) == 1:
        return maths(own, ev, *extra)
    view = combine(LAYOUTS[key[0]], list(parts.values()))
    values = maths(view, ev, *extra)
    maths(own, ev)  # the update alone: labels do not change state
    return values


def label_keys(merchant_id: str | None, device_id: str | None, ip: str | None) -> list[StateKey]:
    """The entities a fraud label counts for: the payment's merchant, device and IP."""
    keys: list[StateKey] = []
    for entity, value in ((Entity.MERCHANT, merchant_id), (Entity.DEVICE, device_id),
                          (Entity.IP, ip)):  # fmt: skip
        if value is not None:
            keys.append((entity, value))
    return keys


def label_books(labels: Iterable[Label]) -> dict[StateKey, LabelBook]:
    """Each entity's fraud labels, as the scorer keeps them: a transaction counts once,
    from its earliest fraud label (`features.labels`)."""
    books: dict[StateKey, LabelBook] = {}
    for label in labels:
        if label.verdict is Verdict.FRAUD:
            add_fraud_label(
                books, label_keys(label.merchant_id, label.device_id, label.ip),
                label_paid_at(label.event_time, label.labelled_at),
                label.labelled_at.timestamp(), label.transaction_id,
            )  # fmt: skip
    return books


def label_paid_at(event_time: datetime | None, labelled_at: datetime) -> float:
    """When a label's payment happened (its `event_time`); a label without one counts as
    if the payment had happened when it was labelled (the latest it can have), so it is
    never early."""
    return (event_time or labelled_at).timestamp()


def add_fraud_label(
    books: dict[StateKey, LabelBook], keys: Iterable[StateKey], paid_at: float,
    labelled_at: float, transaction_id: str,
) -> None:  # fmt: skip
    """Fold one fraud label into the books of `keys` (`label_keys`), as the scorer's label
    folder does."""
    txid = id_hash(transaction_id)
    for key in keys:
        book = books.get(key)
        if book is None:
            book = books[key] = LabelBook()
        book.add(paid_at, labelled_at, txid)


def replay(
    pipeline: FeaturePipeline,
    transactions: Iterable[Transaction],
    labels: Iterable[Label] = (),
    batch_size: int = 10_000,
    states: StateCache | None = None,
) -> np.ndarray:
    """Features for time-ordered history, as the scorer would have computed them. A label
    counts for payments at or after its `labelled_at` only, so no label leaks backwards.
    `states` (empty by default) is left holding every entity's final state."""
    return replay_events(pipeline, _event_batches(transactions, batch_size), labels, states)


def _event_batches(transactions: Iterable[Transaction], size: int) -> Iterator[list[Event]]:
    batch: list[Event] = []
    for tx in transactions:
        batch.append(Event.from_transaction(tx))
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay_events(
    pipeline: FeaturePipeline,
    batches: Iterable[Sequence[Event]],
    labels: Iterable[Label] = (),
    states: StateCache | None = None,
    rows: int | None = None,
) -> np.ndarray:
    """`replay` of `Event`s already built, a batch at a time (training builds them from
    columns, `datasets.LabelledHistory.events`). Given the number of `rows`, the matrix is
    filled in place (no second copy of it while the batches are joined)."""
    states = StateCache() if states is None else states
    books = label_books(labels)
    width = len(pipeline.spec.names)
    if rows is not None:
        out = np.empty((rows, width), dtype=np.float32)
        at = 0
        for batch in batches:
            part = pipeline.transform(batch, states, books)
            out[at : at + len(part)] = part
            at += len(part)
        if at != rows:
            raise ValueError(f"replayed {at} rows, not the {rows} announced")
        return out
    parts = [pipeline.transform(batch, states, books) for batch in batches]
    return np.vstack(parts) if parts else np.empty((0, width), dtype=np.float32)
