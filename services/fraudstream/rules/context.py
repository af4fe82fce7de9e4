"""What a rule can see about one event: its fields, its features and list memberships."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum

from fraudstream.contracts import Transaction

# (list name, entity kind) -> the values of this batch found on that list
ListHits = Mapping[tuple[str, str], frozenset[str]]

_ENTITY_FIELD = {
    "card": "card_token",
    "merchant": "merchant_id",
    "device": "device_id",
    "ip": "ip",
    "bin": "card_bin",
    "country": "country",
}


def entity_value(tx: Transaction, entity: str) -> str | None:
    """The transaction's id for a list entity kind (None when it has none)."""
    value = getattr(tx, _ENTITY_FIELD[entity], None)
    return None if value is None else str(value)


@dataclass(slots=True)
class RuleContext:
    """One event as rules see it; missing features read as NaN (never match)."""

    tx: Transaction
    features: Mapping[str, float] = field(default_factory=dict)
    lists: ListHits = field(default_factory=dict)

    def field(self, name: str) -> str | float | bool | None:
        value = getattr(self.tx, name, None)
        return value.value if isinstance(value, Enum) else value

    def feature(self, name: str) -> float:
        value = self.features.get(name)
        return math.nan if value is None else value

    def listed(self, list_name: str, entity: str) -> bool:
        found = self.lists.get((list_name, entity))
        if not found:  # the usual case: nothing of this batch is on that list
            return False
        value = entity_value(self.tx, entity)
        return value is not None and value in found


class FeatureRow(Mapping[str, float]):
    """One row of the feature matrix, read by name without building a dict per event."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: Mapping[str, int], values: list[float]) -> None:
        self._index = index
        self._values = values

    def __getitem__(self, name: str) -> float:
        return self._values[self._index[name]]

    def get(self, name: str, default: float | None = None) -> float | None:  # type: ignore[override]
        at = self._index.get(name)
        return default if at is None else self._values[at]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)
