"""The late label stream: chargebacks weeks later, customer reports in days, reviews in hours.

Ground truth reaches a fraud system slowly and incompletely. Per fraud incident (one
victim card), the card holder notices or not (`unreported_share` never do); a reported
incident arrives as a customer report after ~2 days or as chargebacks after ~18 days
(lognormal, capped at 90 days), each payment a little apart. Independently, reviewers
label a few payments within hours, with a small error rate. `labelled_at` is always
after the payment's `event_time`, and a payment may get several labels.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.contracts import LabelSource, Verdict
from fraudstream.simulator.config import LabelConfig
from fraudstream.simulator.events import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_S,
    Bools,
    Floats,
    Ints,
    ints,
)
from fraudstream.simulator.tables import TIMESTAMP, tokens

LABEL_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int8()),
        ("transaction_id", pa.string()),
        ("verdict", pa.string()),
        ("source", pa.string()),
        ("actor", pa.string()),
        ("labelled_at", TIMESTAMP),
        ("card_token", pa.string()),
        ("merchant_id", pa.string()),
        ("event_time", TIMESTAMP),
        ("device_id", pa.string()),
        ("ip", pa.string()),
        ("note", pa.string()),
    ]
)
N_REVIEWERS = 12
VERDICTS = (Verdict.FRAUD, Verdict.LEGIT)
# Codes index these tuples; the first two sources also index ACTORS.
SOURCES = (LabelSource.CHARGEBACK, LabelSource.CUSTOMER_REPORT, LabelSource.REVIEWER)
ACTORS = ("chargeback-feed", "customer-service")
NOTES = (
    "chargeback reason 10.4: other fraud, card-absent environment",
    "chargeback reason 10.3: other fraud, card-present environment",
    "card holder does not recognise the payment",
    "manual review",
)
_CUSTOMER, _REVIEWER = 1, 2
_CARD_PRESENT_NOTE, _CUSTOMER_NOTE, _REVIEW_NOTE = 1, 2, 3


def make_labels(
    transactions: pa.Table, incident: Ints, config: LabelConfig, rng: np.random.Generator
) -> pa.Table:
    """Labels for a simulator transactions table (`incident` aligned to its rows)."""
    time_us = ints(transactions["event_time"].cast(pa.int64()).to_numpy())
    is_fraud = transactions["is_fraud"].to_numpy()
    present = transactions["card_present"].to_numpy()
    reported, source, delay = _reported_fraud(incident, is_fraud, config, rng)
    reviewed, verdict, review_delay = _reviews(is_fraud, config, rng)
    rows = pa.array(np.concatenate([reported, reviewed]))
    reviewer = rng.integers(1, N_REVIEWERS + 1, reviewed.size)
    note = np.where(source == _CUSTOMER, _CUSTOMER_NOTE, present[reported] * _CARD_PRESENT_NOTE)
    at = time_us[rows] + np.concatenate([delay, review_delay]).astype(np.int64)
    table = pa.table(
        {
            "schema_version": pa.array(np.ones(len(rows), dtype=np.int8)),
            "transaction_id": transactions["transaction_id"].take(rows),
            "verdict": _take(VERDICTS, np.zeros(reported.size, dtype=np.int64), verdict),
            "source": _take(SOURCES, source, np.full(reviewed.size, _REVIEWER)),
            "actor": pa.concat_arrays(
                [_take(ACTORS, source), tokens("reviewer-", ints(reviewer), 2)]
            ),
            "labelled_at": pa.array(at, type=TIMESTAMP),
            "card_token": transactions["card_token"].take(rows),
            "merchant_id": transactions["merchant_id"].take(rows),
            "event_time": pa.array(time_us[rows], type=TIMESTAMP),
            "device_id": transactions["device_id"].take(rows),
            "ip": transactions["ip"].take(rows),
            "note": _take(NOTES, note, np.full(reviewed.size, _REVIEW_NOTE)),
        },
        schema=LABEL_SCHEMA,
    )
    order = pc.sort_indices(table, [("labelled_at", "ascending"), ("transaction_id", "ascending")])
    return table.take(order)


def _take(values: tuple[str, ...], *codes: Ints) -> pa.Array:
    """`values` (strings, enum members' values) looked up by the concatenated `codes`."""
    return pa.array([str(v) for v in values]).take(pa.array(np.concatenate(codes)))


def _reported_fraud(
    incident: Ints, is_fraud: Bools, config: LabelConfig, rng: np.random.Generator
) -> tuple[Ints, Ints, Floats]:
    """Fraud rows that get reported, their source (0 chargeback, 1 customer) and delay (us)."""
    rows = np.flatnonzero(is_fraud)
    _, which = np.unique(incident[rows], return_inverse=True)
    k = int(which.max()) + 1 if rows.size else 0
    reported = rng.random(k) >= config.unreported_share
    by_customer = rng.random(k) < config.customer_report_share
    median_days = np.where(
        by_customer, config.customer_report_median_days, config.chargeback_median_days
    )
    base = rng.lognormal(np.log(median_days), config.chargeback_sigma) * US_PER_DAY
    spread = np.where(by_customer, 2 * US_PER_HOUR, 2 * US_PER_DAY)[which]
    delay = base[which] + rng.random(rows.size) * spread
    delay = np.clip(delay, 60 * US_PER_S, config.max_delay_days * US_PER_DAY)
    keep = reported[which]
    return ints(rows[keep]), ints(by_customer[which][keep]), delay[keep]


def _reviews(
    is_fraud: Bools, config: LabelConfig, rng: np.random.Generator
) -> tuple[Ints, Ints, Floats]:
    """Reviewed rows, their verdict (0 fraud, 1 legit; a few wrong) and delay (us)."""
    share = np.where(is_fraud, config.reviewer_share_fraud, config.reviewer_share_legit)
    rows = np.flatnonzero(rng.random(is_fraud.size) < share)
    wrong = rng.random(rows.size) < config.reviewer_error_rate
    verdict = ints(is_fraud[rows] == wrong)  # fraud XOR wrong -> 0 (fraud), else 1 (legit)
    hours = rng.lognormal(np.log(config.reviewer_median_hours), 0.7, rows.size)
    delay = np.clip(hours * US_PER_HOUR, 5 * 60 * US_PER_S, 48 * US_PER_HOUR)
    return ints(rows), verdict, delay
