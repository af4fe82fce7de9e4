"""Rules are data: a typed YAML schema compiled to plain Python predicates (never `eval`).

A rule has an id, a description, a condition over the event, its features and the
block/allow lists, an action (decline, approve, review or tag) and a reason code.
Conditions are a small closed grammar: comparisons of one transaction field or computed
feature with a constant, list membership, and `all` / `any` / `not`. Anything else is
refused when the pack loads, with the offending rule named.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fraudstream.contracts.fields import ReasonCode
from fraudstream.features.spec import catalog
from fraudstream.rules.context import FIELD_KINDS, RuleBatch

Scalar = float | int | str | bool
Predicate = Callable[[RuleBatch], np.ndarray]  # a batch in, one bool per event out

# Transaction fields a rule may read (scalars only; ids are matched through lists).
EVENT_FIELDS = frozenset(FIELD_KINDS)


class ListName(StrEnum):
    BLOCK = "block"
    ALLOW = "allow"


class ListEntity(StrEnum):
    CARD = "card"
    MERCHANT = "merchant"
    DEVICE = "device"
    IP = "ip"
    BIN = "bin"
    COUNTRY = "country"


class RuleAction(StrEnum):
    DECLINE = "decline"
    REVIEW = "review"
    APPROVE = "approve"
    TAG = "tag"


_STRICT = ConfigDict(extra="forbid", frozen=True)

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "eq": operator.eq,
    "ne": operator.ne,
    "in": lambda a, b: a in b,
    "not_in": lambda a, b: a not in b,
}


def _kind_of(value: Scalar) -> type:
    if isinstance(value, bool):
        return bool
    return float if isinstance(value, int | float) else str


class Compare(BaseModel):
    """`{field: amount, op: gt, value: 1000}` or `{feature: card_count_1h, op: ge, value: 5}`."""

    model_config = _STRICT
    field: str | None = None
    feature: str | None = None
    op: Literal["gt", "ge", "lt", "le", "eq", "ne", "in", "not_in"]
    value: Scalar | list[Scalar]

    @model_validator(mode="after")
    def _one_operand(self) -> Compare:
        if (self.field is None) == (self.feature is None):
            raise ValueError("give exactly one of `field` or `feature`")
        if self.field is not None and self.field not in EVENT_FIELDS:
            raise ValueError(f"unknown field {self.field!r}; usable: {sorted(EVENT_FIELDS)}")
        if self.feature is not None and self.feature not in catalog():
            raise ValueError(f"unknown feature {self.feature!r}; see `fraudctl features list`")
        if (self.op in {"in", "not_in"}) != isinstance(self.value, list):
            raise ValueError("`in`/`not_in` take a list value; other operators a single value")
        wanted = float if self.feature is not None else FIELD_KINDS[self.field or ""]
        constants = self.value if isinstance(self.value, list) else [self.value]
        if any(_kind_of(c) is not wanted for c in constants):
            raise ValueError(
                f"{self.feature or self.field} compares with {wanted.__name__} values, "
                f"got {self.value!r}"
            )
        return self

    def compile(self) -> Predicate:
        compare, constant = _OPS[self.op], self.value
        if self.feature is not None:
            name = self.feature
            if isinstance(constant, list):
                members = np.array(constant, dtype=np.float64)
                invert = self.op == "not_in"
                return lambda batch: _known(
                    batch.feature(name), lambda v: np.isin(v, members, invert=invert)
                )
            return lambda batch: _known(batch.feature(name), lambda v: compare(v, constant))
        field = self.field or ""
        if isinstance(constant, list):
            constant = frozenset(constant)  # type: ignore[assignment]

        def by_field(batch: RuleBatch) -> np.ndarray:
            values = batch.field(field)
            matched = (v is not None and compare(v, constant) for v in values)
            return np.fromiter(matched, dtype=bool, count=len(values))

        return by_field


def _known(values: np.ndarray, test: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`test` on a feature column; NaN (unknown) never matches, whatever the operator."""
    with np.errstate(invalid="ignore"):
        matched: np.ndarray = np.asarray(test(values), dtype=bool) & ~np.isnan(values)
    return matched


class InList(BaseModel):
    """`{in_list: block, entity: card}`: the event's card (merchant, ...) is on a list."""

    model_config = _STRICT
    in_list: ListName
    entity: ListEntity

    def compile(self) -> Predicate:
        name, entity = self.in_list, self.entity
        return lambda batch: batch.listed(name, entity)


class All(BaseModel):
    model_config = _STRICT
    all: Annotated[list[Condition], Field(min_length=1)]

    def compile(self) -> Predicate:
        parts = [c.compile() for c in self.all]
        return lambda batch: np.logical_and.reduce([p(batch) for p in parts])


class AnyOf(BaseModel):
    model_config = _STRICT
    any: Annotated[list[Condition], Field(min_length=1)]

    def compile(self) -> Predicate:
        parts = [c.compile() for c in self.any]
        return lambda batch: np.logical_or.reduce([p(batch) for p in parts])


class Not(BaseModel):
    model_config = _STRICT
    not_: Condition = Field(alias="not")

    def compile(self) -> Predicate:
        inner = self.not_.compile()
        return lambda batch: ~inner(batch)


Condition = Compare | InList | All | AnyOf | Not


class Rule(BaseModel):
    """One rule of a pack."""

    model_config = _STRICT
    id: ReasonCode
    description: Annotated[str, Field(min_length=1, max_length=256)]
    when: Condition
    action: RuleAction
    reason: ReasonCode
    enabled: bool = True


class RulePackDoc(BaseModel):
    """The YAML document: a version label and the ordered rules."""

    model_config = _STRICT
    version: Annotated[str, Field(min_length=1, max_length=64)]
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        ids = [r.id for r in rules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate rule ids: {duplicates}")
        return rules


for _model in (All, AnyOf, Not):
    _model.model_rebuild()
