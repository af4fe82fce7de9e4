"""The metric names our services export, read from their source (for the checks that
alert rules and dashboards query only metrics that exist)."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[1] / "services" / "fraudstream"
# Exported by the review service (issue 14), which does not exist yet; the backlog alert
# and the dashboard's review panel are written against these names.
PENDING = frozenset({"fraud_review_queue_depth", "fraud_review_oldest_case_age_seconds"})
_LITERAL = re.compile(r"""["'](fraud_[a-z0-9_]+)["']""")
_REFERENCE = re.compile(r"\b(fraud_[a-z0-9_]+)\b")
_SUFFIX = re.compile(r"_(total|bucket|count|sum|created)$")


def exported() -> set[str]:
    """Every `fraud_*` string literal in the services' code: the metric names."""
    return {m for path in SERVICES.rglob("*.py") for m in _LITERAL.findall(path.read_text())}


def unknown(promql: str, names: set[str]) -> set[str]:
    """Metric names in `promql` that no service exports (suffixes of counters and
    histograms allowed)."""
    found = set(_REFERENCE.findall(promql))
    return {n for n in found
            if n not in names and _SUFFIX.sub("", n) not in names and n not in PENDING}  # fmt: skip
