"""Which model decides each row (champion or canary), the shadow's score, explanations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from fraudstream.contracts import Action, DecisionPath
from fraudstream.rules.engine import RuleOutcome
from fraudstream.scoring.decide import DecisionPolicy, ModelScores, Verdict, decide_batch
from fraudstream.scoring.model import ServingModel
from fraudstream.scoring.models import ModelSet


@dataclass
class BatchScores:
    """The model outputs of a batch, row-aligned, as the decision messages report them."""

    score: list[float | None]
    members: list[dict[str, float]]
    model_version: list[str | None]
    contributions: dict[int, list[tuple[str, float]]] = field(default_factory=dict)  # by row
    monitored: dict[int, dict[str, float]] = field(default_factory=dict)  # by row, ML path only
    shadow_version: str | None = None
    shadow_score: list[float] | None = None  # the shadow model's score per row

    @classmethod
    def empty(cls, n: int) -> BatchScores:
        return cls([None] * n, [_NO_MEMBERS] * n, [None] * n)


_NO_MEMBERS: dict[str, float] = {}  # shared by unscored rows: never mutated


def route_and_decide(
    models: ModelSet,
    rows: np.ndarray,
    cards: list[str],
    rules: Sequence[RuleOutcome],
    amounts: np.ndarray,
    *,
    degraded: bool,
    policy: DecisionPolicy,
    explain: bool = True,
) -> tuple[list[Verdict], BatchScores]:
    """Verdicts and model outputs per row; canary rows use the canary's thresholds.
    `explain=False` skips the top contributions (a tree walk per model review/decline)."""
    n = len(cards)
    verdicts: list[Verdict | None] = [None] * n
    out = BatchScores.empty(n)
    canary = models.canary_rows(cards)
    for model, mask in ((models.champion, ~canary), (models.canary, canary)):
        index = np.flatnonzero(mask)
        if index.size == 0:
            continue
        at = index.tolist()
        chosen = [rules[i] for i in at]
        scores = _predict(model, rows[index])
        group = decide_batch(chosen, amounts[index], scores, degraded=degraded, policy=policy)
        if explain:
            _explain(model, rows[index], group, out.contributions, at)
        for j, i in enumerate(at):
            verdicts[i] = group[j]
        if scores is None or model is None:
            continue
        if not degraded and model.monitored:
            for i, values in zip(at, model.monitored_values(rows[index]), strict=True):
                out.monitored[i] = values
        members = {name: values.tolist() for name, values in scores.members.items()}
        for j, (i, score) in enumerate(zip(at, scores.scores.tolist(), strict=True)):
            out.score[i] = score
            out.members[i] = {name: values[j] for name, values in members.items()}
            out.model_version[i] = model.version
    if models.shadow is not None:
        out.shadow_version = models.shadow.version
        out.shadow_score = models.shadow.predict(rows)[0].tolist()
    return [v for v in verdicts if v is not None], out


def _predict(model: ServingModel | None, rows: np.ndarray) -> ModelScores | None:
    if model is None:
        return None
    scores, members, disagree = model.predict(rows)
    return ModelScores(scores, members, disagree, model.ensemble.thresholds)


def _explain(
    model: ServingModel | None,
    rows: np.ndarray,
    verdicts: list[Verdict],
    contributions: dict[int, list[tuple[str, float]]],
    at: list[int],
) -> None:
    """Top contributions, only for model-driven reviews and declines (they cost a tree walk)."""
    wanted = [
        j for j, v in enumerate(verdicts)
        if v.action is not _APPROVE and v.path is not _RULES_PATH
    ]  # fmt: skip
    if model is None or not wanted:
        return
    for j, top in zip(wanted, model.explain(rows[wanted]), strict=True):
        contributions[at[j]] = top


_APPROVE, _RULES_PATH = Action.APPROVE, DecisionPath.RULES  # enum lookups cost on hot paths
