"""Lifecycle stages of a model's versions (`stages.json`) and the rules for changing them.

Pure functions over a `StageBook`; `Registry` reads it, applies one change under a lock
and writes it back atomically. Every change yields the `ModelEvent` that goes on
`fraud.models`. That topic is compacted (last event per model name survives), so each
event alone says the state that matters: PROMOTED or ROLLED_BACK name the new champion.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fraudstream.contracts.fields import Identifier
from fraudstream.contracts.messages import ModelEvent, ModelEventType
from fraudstream.registry.errors import RegistryError


class Stage(StrEnum):
    """Where a version is in its life; one champion at most, one shadow, one canary."""

    CANDIDATE = "candidate"
    SHADOW = "shadow"
    CANARY = "canary"
    CHAMPION = "champion"
    RETIRED = "retired"


SETTABLE = (Stage.SHADOW, Stage.CANARY, Stage.CHAMPION, Stage.RETIRED)
_EVENT_FOR = {
    Stage.SHADOW: ModelEventType.SHADOW,
    Stage.CANARY: ModelEventType.CANARY,
    Stage.CHAMPION: ModelEventType.PROMOTED,
    Stage.RETIRED: ModelEventType.RETIRED,
}


class VersionState(BaseModel):
    """A version's current stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stage: Stage
    canary_share: float | None = None
    registered_at: datetime
    updated_at: datetime


class StageBook(BaseModel):
    """`models/<name>/stages.json`: stage per version, champion history, event history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    model_name: str
    versions: dict[str, VersionState] = Field(default_factory=dict)
    champions: list[str] = Field(default_factory=list, description="Champion history, last = now")
    events: list[ModelEvent] = Field(default_factory=list)

    def holder(self, stage: Stage) -> str | None:
        """The version currently in `stage` (for the single-holder stages), if any."""
        return next((v for v, s in self.versions.items() if s.stage is stage), None)


_ACTOR = TypeAdapter(Identifier)


def check_actor(actor: str) -> str:
    """An actor id valid in `ModelEvent` (checked before anything is written)."""
    try:
        return _ACTOR.validate_python(actor)
    except ValidationError as exc:
        raise RegistryError(
            f"invalid actor {actor!r}: use an identifier such as 'alice' or 'trainer'"
        ) from exc


def _event(
    book: StageBook,
    version: str,
    kind: ModelEventType,
    *,
    actor: str,
    at: datetime,
    note: str = "",
    canary_share: float | None = None,
) -> ModelEvent:
    try:
        return ModelEvent(
            model_name=book.model_name,
            version=version,
            event=kind,
            canary_share=canary_share,
            actor=actor,
            at=at,
            note=note,
        )
    except ValidationError as exc:
        raise RegistryError(
            f"cannot record the {kind.value} event ({exc.errors()[0]['msg']}): the actor must "
            "be an identifier such as 'alice' or 'trainer', times must carry a time zone"
        ) from exc


def _with(
    book: StageBook,
    changes: dict[str, tuple[Stage, float | None]],
    events: list[ModelEvent],
    at: datetime,
    champions: list[str] | None = None,
) -> StageBook:
    versions = dict(book.versions)
    for version, (stage, share) in changes.items():
        versions[version] = versions[version].model_copy(
            update={"stage": stage, "canary_share": share, "updated_at": at}
        )
    return book.model_copy(
        update={
            "versions": versions,
            "events": [*book.events, *events],
            "champions": book.champions if champions is None else champions,
        }
    )


def register(
    book: StageBook, version: str, actor: str, at: datetime, note: str = ""
) -> tuple[StageBook, ModelEvent]:
    """Add a new version as a candidate."""
    if version in book.versions:
        raise RegistryError(f"{book.model_name} {version} is already registered")
    event = _event(book, version, ModelEventType.REGISTERED, actor=actor, at=at, note=note)
    state = VersionState(stage=Stage.CANDIDATE, registered_at=at, updated_at=at)
    updated = book.model_copy(
        update={"versions": {**book.versions, version: state}, "events": [*book.events, event]}
    )
    return updated, event


def _check_change(book: StageBook, version: str, stage: Stage, share: float | None) -> None:
    name = book.model_name
    if version not in book.versions:
        raise RegistryError(f"{name} has no version {version}: see `fraudctl models list {name}`")
    if stage not in SETTABLE:
        raise RegistryError(f"stage must be one of {[s.value for s in SETTABLE]}, not {stage}")
    if (stage is Stage.CANARY) != (share is not None):
        raise RegistryError("give canary_share (0 < share <= 1) for canary, and only for canary")
    if share is not None and not 0 < share <= 1:
        raise RegistryError(f"canary_share must be in (0, 1], got {share}")
    current = book.versions[version]
    if current.stage is Stage.CHAMPION:
        raise RegistryError(
            f"{name} {version} is the champion: promote another version or "
            f"`fraudctl models rollback {name}`"
        )
    if current.stage is stage and stage is not Stage.CANARY:
        raise RegistryError(f"{name} {version} is already {stage.value}")
    holder = book.holder(stage) if stage in (Stage.SHADOW, Stage.CANARY) else None
    if holder is not None and holder != version:
        raise RegistryError(
            f"{name} {holder} is already in {stage.value}: retire it or promote it first"
        )


def set_stage(
    book: StageBook,
    version: str,
    stage: Stage,
    *,
    actor: str,
    at: datetime,
    canary_share: float | None = None,
    note: str = "",
) -> tuple[StageBook, ModelEvent]:
    """Move `version` to `stage`; promoting to champion retires the previous champion."""
    _check_change(book, version, stage, canary_share)
    event = _event(
        book, version, _EVENT_FOR[stage], actor=actor, at=at, note=note, canary_share=canary_share
    )
    if stage is not Stage.CHAMPION:
        return _with(book, {version: (stage, canary_share)}, [event], at), event
    changes: dict[str, tuple[Stage, float | None]] = {version: (Stage.CHAMPION, None)}
    events = [event]
    previous = book.holder(Stage.CHAMPION)
    if previous is not None:
        changes[previous] = (Stage.RETIRED, None)
        retired_note = f"replaced by {version}"
        retired = _event(
            book, previous, ModelEventType.RETIRED, actor=actor, at=at, note=retired_note
        )
        events.insert(0, retired)
    return _with(book, changes, events, at, [*book.champions, version]), event


def rollback(
    book: StageBook, actor: str, at: datetime, note: str = ""
) -> tuple[StageBook, ModelEvent]:
    """Retire the current champion and bring back the one before it."""
    name = book.model_name
    current = book.holder(Stage.CHAMPION)
    if current is None or len(book.champions) < 2:
        raise RegistryError(
            f"{name} has no earlier champion to roll back to: promote a version with "
            f"`fraudctl models promote {name} <version>`"
        )
    previous = book.champions[-2]
    text = note or f"rolled back from {current}"
    back = f"rolled back to {previous}"
    retired = _event(book, current, ModelEventType.RETIRED, actor=actor, at=at, note=back)
    event = _event(book, previous, ModelEventType.ROLLED_BACK, actor=actor, at=at, note=text)
    changes: dict[str, tuple[Stage, float | None]] = {
        current: (Stage.RETIRED, None),
        previous: (Stage.CHAMPION, None),
    }
    return _with(book, changes, [retired, event], at, book.champions[:-1]), event
