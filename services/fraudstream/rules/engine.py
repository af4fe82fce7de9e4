"""Evaluating a rule pack, and reloading it from its file without a restart."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import yaml
from pydantic import ValidationError

from fraudstream.errors import ConfigurationError, invalid
from fraudstream.rules.context import RuleBatch
from fraudstream.rules.model import Predicate, RuleAction, RulePackDoc

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuleHit:
    """A rule that matched: what it asks for and why."""

    rule_id: str
    action: RuleAction
    reason: str
    description: str


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """The decisive action (the first decline/approve/review match in pack order) and all hits."""

    action: RuleAction | None
    hits: tuple[RuleHit, ...]


NO_HITS = RuleOutcome(None, ())


@dataclass(frozen=True, slots=True)
class _Compiled:
    hit: RuleHit
    predicate: Predicate


class RulePack:
    """A validated, compiled pack; `evaluate` runs every enabled rule on one event."""

    def __init__(self, doc: RulePackDoc) -> None:
        self.version = doc.version
        self._rules = tuple(
            _Compiled(RuleHit(r.id, r.action, r.reason, r.description), r.when.compile())
            for r in doc.rules
            if r.enabled
        )

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def rules(self) -> tuple[RuleHit, ...]:
        """The enabled rules, in evaluation order, as the hits they produce."""
        return tuple(rule.hit for rule in self._rules)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<rules>") -> RulePack:
        """Parse and validate a pack; errors name the file and the offending rule."""
        try:
            return cls(RulePackDoc.model_validate(yaml.safe_load(text)))
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{source}: not valid YAML: {exc}") from exc
        except ValidationError as exc:
            raise invalid(f"{source}: invalid rule pack", exc) from exc

    def evaluate(self, batch: RuleBatch) -> list[RuleOutcome]:
        """Every enabled rule on every event of the batch; one outcome per event, in order."""
        outcomes = [NO_HITS] * len(batch)
        if not self._rules or not outcomes:
            return outcomes
        matched = np.vstack([rule.predicate(batch) for rule in self._rules])  # rules x events
        for event in np.flatnonzero(matched.any(axis=0)).tolist():
            hits = tuple(self._rules[r].hit for r in np.flatnonzero(matched[:, event]).tolist())
            decisive = next((h.action for h in hits if h.action is not RuleAction.TAG), None)
            outcomes[event] = RuleOutcome(decisive, hits)
        return outcomes


class RuleProvider(Protocol):
    """Where the scorer gets its pack between batches: a file (`RuleSource`) or the
    compacted topic (`rules.published.PublishedRules`)."""

    on_reload: Callable[[str], None]
    on_reload_error: Callable[[str], None]
    last_error: str | None

    @property
    def pack(self) -> RulePack: ...

    def maybe_reload(self) -> bool: ...


def _ignore(_value: str) -> None:
    """Default callback."""


class RuleSource:
    """A rule pack file watched for changes; a broken edit keeps the last good pack.

    `on_reload(version)` runs after a new pack is active, `on_reload_error(message)` after
    each failed reload (a broken edit, or the file becoming unreadable: reported once, not
    on every batch); both may be assigned after construction. The pack loaded at
    construction is reported to neither: read `pack.version`.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_reload: Callable[[str], None] = _ignore,
        on_reload_error: Callable[[str], None] = _ignore,
    ) -> None:
        self.path = path
        self.on_reload = on_reload
        self.on_reload_error = on_reload_error
        self._stamp: tuple[int, int] | None = self._read_stamp()
        self.pack = RulePack.from_yaml(path.read_text(), str(path))
        self.last_error: str | None = None

    def _read_stamp(self) -> tuple[int, int]:
        stat = self.path.stat()
        return stat.st_mtime_ns, stat.st_size

    def maybe_reload(self) -> bool:
        """Reload when the file changed (call between batches); True if a new pack is active."""
        try:
            stamp = self._read_stamp()
        except OSError as exc:
            if self._stamp is not None:  # report the file going away once, not every batch
                self._stamp = None
                self._failed(f"{self.path}: {exc}")
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.pack = RulePack.from_yaml(self.path.read_text(), str(self.path))
        except (ConfigurationError, OSError) as exc:
            self._failed(str(exc))
            return False
        self.last_error = None
        _log.info("loaded rule pack %s (%d rules)", self.pack.version, len(self.pack))
        self.on_reload(self.pack.version)
        return True

    def _failed(self, message: str) -> None:
        self.last_error = message
        _log.error("keeping rule pack %s: %s", self.pack.version, message)
        self.on_reload_error(message)
