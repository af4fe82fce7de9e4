"""Evaluating a rule pack, and reloading it from its file without a restart."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from fraudstream.errors import ConfigurationError
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

    @classmethod
    def from_yaml(cls, text: str, source: str = "<rules>") -> RulePack:
        """Parse and validate a pack; errors name the file and the offending rule."""
        try:
            return cls(RulePackDoc.model_validate(yaml.safe_load(text)))
        except yaml.YAMLError as exc:
            raise ConfigurationError(f"{source}: not valid YAML: {exc}") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise ConfigurationError(f"{source}: invalid rule pack: {problems}") from exc

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


class RuleSource:
    """A rule pack file watched for changes; a broken edit keeps the last good pack."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp = self._read_stamp()
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
            self.last_error = f"{self.path}: {exc}"
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.pack = RulePack.from_yaml(self.path.read_text(), str(self.path))
        except (ConfigurationError, OSError) as exc:
            self.last_error = str(exc)
            _log.error("keeping rule pack %s: %s", self.pack.version, exc)
            return False
        self.last_error = None
        _log.info("loaded rule pack %s (%d rules)", self.pack.version, len(self.pack))
        return True
