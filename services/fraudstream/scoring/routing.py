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
class RowScore:
    """One row's model output, as the decision message reports it."""

    score: float | None = None
    members: dict[str, float] = field(default_factory=dict)
    model_version: str | None = None
    contributions: list[tuple[str, float]] = field(default_factory=list)
    shadow: tuple[str, float] | None = None  # (version, score) of the shadow model


def route_and_decide(
    models: ModelSet,
    rows: np.ndarray,
    cards: list[str],
    rules: Sequence[RuleOutcome],
    amounts: np.ndarray,
    *,
    degraded: bool,
    policy: DecisionPolicy,
) -> tuple[list[Verdict], list[RowScore]]:
    """Verdicts and model outputs per row; canary rows use the canary's thresholds."""
    n = len(cards)
    verdicts: list[Verdict | None] = [None] * n
    scored = [RowScore() for _ in range(n)]
    canary = models.canary_rows(cards)
    for model, mask in ((models.champion, ~canary), (models.canary, canary)):
        index = np.flatnonzero(mask)
        if index.size == 0:
            continue
        chosen = [rules[i] for i in index.tolist()]
        scores = _predict(model, rows[index])
        group = decide_batch(chosen, amounts[index], scores, degraded=degraded, policy=policy)
        _explain(model, rows[index], group, scored, index)
        for j, i in enumerate(index.tolist()):
            verdicts[i] = group[j]
            if scores is not None and model is not None:
                scored[i].score = float(scores.scores[j])
                scored[i].members = {k: float(v[j]) for k, v in scores.members.items()}
                scored[i].model_version = model.version
    if models.shadow is not None:
        shadow_scores = models.shadow.predict(rows)[0]
        for i in range(n):
            scored[i].shadow = (models.shadow.version, float(shadow_scores[i]))
    return [v for v in verdicts if v is not None], scored


def _predict(model: ServingModel | None, rows: np.ndarray) -> ModelScores | None:
    if model is None:
        return None
    scores, members, disagree = model.predict(rows)
    return ModelScores(scores, members, disagree, model.ensemble.thresholds)


def _explain(
    model: ServingModel | None,
    rows: np.ndarray,
    verdicts: list[Verdict],
    scored: list[RowScore],
    index: np.ndarray,
) -> None:
    """Top contributions, only for model-driven reviews and declines (they cost a tree walk)."""
    wanted = [
        j for j, v in enumerate(verdicts)
        if v.action is not Action.APPROVE and v.path is not DecisionPath.RULES
    ]  # fmt: skip
    if model is None or not wanted:
        return
    for j, contributions in zip(wanted, model.explain(rows[wanted]), strict=True):
        scored[int(index[j])].contributions = contributions
