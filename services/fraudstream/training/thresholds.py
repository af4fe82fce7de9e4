"""Choosing the decline and review thresholds from the validation window.

- decline: the lowest score whose "score >= t" set has validation precision >= target.
  When no threshold reaches the target, decline is set just above 1 (the model declines
  nothing on its own; rules still can) and `decline_target_met` is False.
- review: the lowest score such that reviews (the band [review, decline) plus
  disagreement cases below the band) stay within `review_budget` of validation traffic.
- disagreement reviews take at most `max_disagreement_share` of the budget (the margin is
  raised until they fit, `train.fitting_margin`), so the band is never empty, and are
  kept only if enough of them find fraud at least as often as the band cases they push
  out of the budget (`disagreement_earns_reviews`).
"""

from __future__ import annotations

import math

import numpy as np

from fraudstream.model.ensemble import Thresholds, decline_mask, review_mask

# Disagreement reviews need this many validation cases to show they find fraud: on the
# simulator, 11 cases said "yes" and the test window then reviewed 0.79 % against 0.5 %.
MIN_DISAGREEMENT_CASES = 20
NEVER = math.nextafter(1.0, 2.0)  # above every probability: "score >= NEVER" is always False


def _group_ends(sorted_desc: np.ndarray) -> np.ndarray:
    """Index of the last row of each run of equal scores in a descending array."""
    change = np.flatnonzero(np.diff(sorted_desc) != 0)
    return np.append(change, len(sorted_desc) - 1)


def decline_threshold(scores: np.ndarray, y: np.ndarray, target: float) -> tuple[float, bool]:
    """Lowest threshold with precision >= target, and whether one exists."""
    order = np.argsort(-scores, kind="stable")
    s, hits = scores[order], y[order].astype(np.int64)
    ends = _group_ends(s)
    precision = np.cumsum(hits)[ends] / (ends + 1)
    ok = np.flatnonzero(precision >= target)
    if len(ok) == 0:
        return NEVER, False
    return float(s[ends[ok[-1]]]), True


def review_threshold(
    scores: np.ndarray, disagree: np.ndarray, decline: float, budget: float
) -> float:
    """Lowest threshold keeping the review share (band + disagreements) within budget."""
    below = scores < decline
    s, dis = scores[below], disagree[below]
    if len(s) == 0:
        return decline
    order = np.argsort(-s, kind="stable")
    s, dis = s[order], dis[order]
    ends = _group_ends(s)
    # Reviews if the band starts at s[end]: every row down to `end`, plus disagreements below.
    dis_below = int(dis.sum()) - np.cumsum(dis)[ends]
    reviews = ends + 1 + dis_below
    fits = np.flatnonzero(reviews <= budget * len(scores))
    if len(fits) == 0:
        return decline  # disagreements alone fill the budget: empty score band
    return float(s[ends[fits[-1]]])


def choose_thresholds(
    scores: np.ndarray,
    y: np.ndarray,
    disagree: np.ndarray,
    review_budget: float,
    target_precision: float,
) -> Thresholds:
    """Decline and review thresholds on validation scores, with the rates they produce."""
    decline, met = decline_threshold(scores, y, target_precision)
    review = review_threshold(scores, disagree, decline, review_budget)
    draft = Thresholds(
        review=review,
        decline=decline,
        decline_target_met=met,
        review_budget=review_budget,
        target_decline_precision=target_precision,
        validation_review_rate=0.0,
        validation_decline_rate=0.0,
        validation_decline_precision=None,
    )
    declined = decline_mask(scores, draft)
    return draft.model_copy(
        update={
            "validation_review_rate": float(review_mask(scores, disagree, draft).mean()),
            "validation_band_rate": float(((scores >= review) & (scores < decline)).mean()),
            "validation_decline_rate": float(declined.mean()),
            "validation_decline_precision": float(y[declined].mean()) if declined.any() else None,
        }
    )


def disagreement_earns_reviews(
    scores: np.ndarray,
    y: np.ndarray,
    disagree: np.ndarray,
    with_disagreement: Thresholds,
    without: Thresholds,
) -> bool:
    """True when disagreement-only reviews are at least as often fraud as the band rows
    they displace (validation); False too when fewer than `MIN_DISAGREEMENT_CASES`
    validation rows would be reviewed for disagreement alone (too few to tell).
    """
    only = disagree & (scores < with_disagreement.review)
    if only.sum() < MIN_DISAGREEMENT_CASES:
        return False
    displaced = (scores >= without.review) & (scores < with_disagreement.review) & ~disagree
    return not displaced.any() or bool(y[only].mean() >= y[displaced].mean())
