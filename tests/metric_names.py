"""The metric names our services export, read from their source (for the checks that
alert rules and dashboards query only metrics that exist)."""

from __future__ import annotations

import re
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[1] / "services" / "fraudstream"
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
            if n not in names and _SUFFIX.sub("", n) not in names}  # fmt: skip
