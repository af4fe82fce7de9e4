"""Simulated payments as an Arrow table with the contract's columns, and back to contracts.

The table has exactly the `Transaction` field names as columns (producer features
flattened as `features.<name>`) plus the ground truth `is_fraud` and `scenario`, which
readers must drop before validating a row as a `Transaction`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.contracts import Channel, Transaction
from fraudstream.simulator import catalog as cat
from fraudstream.simulator.config import SCENARIO_NAMES
from fraudstream.simulator.events import NO_VALUE, Bools, Events, Ints, ints
from fraudstream.simulator.world import Population

FEATURE_PREFIX = "features."
TRUTH_COLUMNS = ("is_fraud", "scenario")
ID_DIGITS = 12
TIMESTAMP = pa.timestamp("us", tz="UTC")
TRANSACTION_SCHEMA = pa.schema(
    [
        ("schema_version", pa.int8()),
        ("transaction_id", pa.string()),
        ("event_time", TIMESTAMP),
        ("card_token", pa.string()),
        ("card_bin", pa.string()),
        ("customer_id", pa.string()),
        ("merchant_id", pa.string()),
        ("mcc", pa.string()),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("channel", pa.string()),
        ("card_present", pa.bool_()),
        ("country", pa.string()),
        ("latitude", pa.float64()),
        ("longitude", pa.float64()),
        ("device_id", pa.string()),
        ("ip", pa.string()),
        (f"{FEATURE_PREFIX}auth_3ds", pa.float64()),
        ("is_fraud", pa.bool_()),
        ("scenario", pa.string()),
    ]
)
_CHANNELS = pa.array([c.value for c in cat.CHANNELS])
_SCENARIOS = pa.array(SCENARIO_NAMES)


def transactions_table(events: Events, pop: Population, prefix: str, first_serial: int) -> pa.Table:
    """Contract columns for time-sorted `events`; ids are `<prefix>-<serial>` from `first_serial`.

    Card `i` is `card-<i>` (8 digits, never a 13-19 digit PAN), customer `cust-<i>`,
    merchant `merch-<j>`, device `dev-<k>`; IPs are dotted IPv4.
    """
    n = len(events)
    serial = ints(np.arange(first_serial, first_serial + n))
    columns: dict[str, pa.Array] = {
        "schema_version": pa.array(np.ones(n, dtype=np.int8)),
        "transaction_id": tokens(f"{prefix}-", serial, ID_DIGITS),
        "event_time": pa.array(events.time_us, type=TIMESTAMP),
        "card_token": tokens("card-", events.card, 8),
        # A handful of issuer BINs, fixed per card (BINs are not card numbers).
        "card_bin": tokens("4", ints((events.card * 7919) % 97 * 1031), 5),
        "customer_id": tokens("cust-", events.card, 8),
        "merchant_id": tokens("merch-", events.merchant, 6),
        "mcc": pa.array(pop.merchant_mcc[events.merchant]),
        "amount": pa.array(events.amount),
        "currency": pa.repeat("EUR", n),
        "channel": _CHANNELS.take(pa.array(events.channel)),
        "card_present": pa.array(cat.CHANNEL_CARD_PRESENT[events.channel]),
        "country": pa.array(cat.REGION_COUNTRY[pop.merchant_region[events.merchant]]),
        "latitude": pa.array(events.lat, from_pandas=True),
        "longitude": pa.array(events.lon, from_pandas=True),
        "device_id": tokens("dev-", events.device, 8, events.device != NO_VALUE),
        "ip": _dotted(events.ip),
        f"{FEATURE_PREFIX}auth_3ds": pa.array(events.auth_3ds),
        "is_fraud": pa.array(events.scenario > 0),
        "scenario": _SCENARIOS.take(pa.array(events.scenario)),
    }
    return pa.table(columns, schema=TRANSACTION_SCHEMA)


def tokens(prefix: str, values: Ints, digits: int, valid: Bools | None = None) -> pa.Array:
    """`prefix` + zero-padded `values` as strings, null where not `valid`."""
    mask = None if valid is None else ~valid
    numbers = pa.array(values, mask=mask).cast(pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, width=digits, padding="0"), "")


def _dotted(ip: Ints) -> pa.Array:
    """Integer IPv4 addresses as dotted strings; -1 is null."""
    mask = ip == NO_VALUE
    octets = [
        pa.array((ip >> shift) & 255, mask=mask).cast(pa.string()) for shift in (24, 16, 8, 0)
    ]
    return pc.binary_join_element_wise(*octets, ".")


def iter_transactions(table: pa.Table, batch_rows: int = 4096) -> Iterator[Transaction]:
    """Validated `Transaction`s from the rows of a simulator table, in table order.

    Ground-truth columns are dropped and `features.<name>` columns nested back; a row
    that does not satisfy the contract raises pydantic's `ValidationError`.
    """
    feature_columns = [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
    for batch in table.to_batches(max_chunksize=batch_rows):
        for row in batch.to_pylist():
            nested = nest_features(row, feature_columns)
            for column in TRUTH_COLUMNS:
                nested.pop(column, None)
            nested["channel"] = Channel(nested["channel"])
            yield Transaction.model_validate(nested)


def nest_features(row: dict[str, Any], feature_columns: list[str]) -> dict[str, Any]:
    """`row` with `features.<name>` keys gathered into `features` (None when all null);
    ground-truth keys move after it, so the rest reads in contract field order."""
    features = {
        column[len(FEATURE_PREFIX) :]: value
        for column in feature_columns
        if (value := row.pop(column)) is not None
    }
    truth = {column: row.pop(column) for column in TRUTH_COLUMNS if column in row}
    row["features"] = features or None
    row.update(truth)
    return row
