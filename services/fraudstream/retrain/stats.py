"""Confidence intervals for comparing two models' rates (pure numpy-free arithmetic).

Recall (declined fraud / fraud) and decline precision (fraud / declines) are proportions.
Champion and challenger are compared with Newcombe's hybrid score interval for the
difference of two independent proportions (Newcombe 1998, method 10: Wilson intervals
of each side combined), which keeps its coverage with the few dozen frauds a canary
sees, where the Wald interval does not. On the paired offline comparison (both models
scored on the same rows) the independent-samples interval is conservative: wider than
a paired one, so it errs towards keeping the champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


def z_value(confidence: float) -> float:
    """The two-sided normal quantile for `confidence` (0.95 -> 1.96)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(hits: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of hits / n (the whole [0, 1] when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = hits / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """b's rate minus a's, with its confidence interval."""

    a_hits: int
    a_n: int
    b_hits: int
    b_n: int
    estimate: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def difference(a_hits: int, a_n: int, b_hits: int, b_n: int, confidence: float) -> Difference:
    """b_hits/b_n - a_hits/a_n with Newcombe's hybrid score interval. A side with no
    trials makes the interval [-1, 1]: nothing is known."""
    z = z_value(confidence)
    if a_n <= 0 or b_n <= 0:
        return Difference(a_hits, a_n, b_hits, b_n, 0.0, -1.0, 1.0, confidence)
    pa, pb = a_hits / a_n, b_hits / b_n
    la, ua = wilson(a_hits, a_n, z)
    lb, ub = wilson(b_hits, b_n, z)
    d = pb - pa
    low = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    high = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return Difference(a_hits, a_n, b_hits, b_n, d, max(-1.0, low), min(1.0, high), confidence)
