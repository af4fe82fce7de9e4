"""Contract codec throughput: validated decode and encode of transactions, per record.

Baseline in the same run: plain `orjson.loads` / `orjson.dumps` of the same records (no
validation), so the numbers say what validation costs on this machine today.

    python load_tests/bench_codec.py [--records 50000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from fraudstream.contracts import decode_transactions, encode, encode_batch
from fraudstream.simulator.population import legit_transactions, make_population

LIMIT = 64 * 1024


def _time_per_record(work: Callable[[], object], records: int, repeats: int) -> list[float]:
    """Microseconds per record of each repeat (after one warm-up run)."""
    work()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        runs.append((time.perf_counter() - start) / records * 1e6)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    events = legit_transactions(make_population(10_000, 1_000, 1), datetime.now(UTC), 100.0, 1)
    messages = list(itertools.islice(events, args.records))
    raw = [encode(m) for m in messages]
    plain = [orjson.loads(r) for r in raw]

    cases: dict[str, Callable[[], object]] = {
        "baseline orjson.loads": lambda: [orjson.loads(r) for r in raw],
        "decode_transactions (validated)": lambda: decode_transactions(raw, LIMIT),
        "baseline orjson.dumps": lambda: [orjson.dumps(p) for p in plain],
        "encode_batch": lambda: encode_batch(messages),
    }
    size = sum(map(len, raw)) / len(raw)
    print(f"{args.records} records x {args.repeats} repeats, {size:.0f} B average record")
    print(f"{'case':34} {'median us/rec':>14} {'min':>8} {'records/s':>12}")
    for name, work in cases.items():
        runs = _time_per_record(work, args.records, args.repeats)
        median = statistics.median(runs)
        print(f"{name:34} {median:14.2f} {min(runs):8.2f} {1e6 / median:12,.0f}")


if __name__ == "__main__":
    main()
