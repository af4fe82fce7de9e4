"""`fraudctl drift status`: each detector's statistic and last alarm, read from the
monitor's `/metrics` (the same gauges Prometheus alerts on), as a table."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from fraudstream.errors import FraudStreamError

MAX_METRICS_BYTES = 8 * 1024 * 1024
_GAUGES = {
    "fraud_drift_statistic": "value",
    "fraud_drift_threshold": "threshold",
    "fraud_drift_detected": "drifted",
    "fraud_drift_events": "events",
    "fraud_drift_last_alarm_timestamp_seconds": "last_alarm_at",
}


@dataclass
class Row:
    """One detector of one model version, as the monitor reports it."""

    model_version: str
    detector: str
    feature: str
    value: float = float("nan")
    threshold: float = float("nan")
    drifted: float = 0.0
    events: float = 0.0
    last_alarm_at: float | None = None


def parse(text: str) -> list[Row]:
    """The detector rows in a `/metrics` text, ordered by version, detector, feature."""
    rows: dict[tuple[str, str, str], Row] = {}
    for family in text_string_to_metric_families(text):
        field = _GAUGES.get(family.name)
        if field is None:
            continue
        for sample in family.samples:
            key = (sample.labels["model_version"], sample.labels["detector"],
                   sample.labels.get("feature", ""))  # fmt: skip
            row = rows.setdefault(key, Row(*key))
            setattr(row, field, sample.value)
    return [rows[k] for k in sorted(rows)]


def render(rows: list[Row]) -> str:
    """A tab-separated table; drifted detectors are marked DRIFTED."""
    if not rows:
        return "the monitor has seen no ML decision yet (no detector reports)"
    lines = ["model version\tdetector\tfeature\tstatistic\tthreshold\tevents\tstate\tlast alarm"]
    for r in rows:
        alarm = "-" if r.last_alarm_at is None else (
            f"{datetime.fromtimestamp(r.last_alarm_at, UTC):%Y-%m-%d %H:%M:%S}")  # fmt: skip
        state = "DRIFTED" if r.drifted else "ok"
        lines.append(f"{r.model_version}\t{r.detector}\t{r.feature or '-'}\t{r.value:.4g}\t"
                     f"{r.threshold:.4g}\t{r.events:,.0f}\t{state}\t{alarm}")  # fmt: skip
    drifted = sum(1 for r in rows if r.drifted)
    lines.append(f"{drifted} of {len(rows)} detectors drifted")
    return "\n".join(lines)


def fetch(url: str, timeout_s: float = 5.0) -> str:
    """The monitor's `/metrics` text; a clear error when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - ours
            return str(response.read(MAX_METRICS_BYTES).decode())
    except (urllib.error.URLError, OSError) as exc:
        raise FraudStreamError(
            f"the drift monitor does not answer at {url} ({exc}): is it running "
            "(`fraudctl drift monitor`, started by `make run`)? Its port is "
            "FRAUD_DRIFT_METRICS_PORT"
        ) from None
