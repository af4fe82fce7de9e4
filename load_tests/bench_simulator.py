"""Simulator throughput: generate N transactions in memory, then write Parquet and JSONL.

Prints wall-clock seconds per step, rows per second and file sizes, plus the fraud mix
(share of rows per scenario) and the label stream's size, so the numbers and the data
they describe are checked together.

    python load_tests/bench_simulator.py [--transactions 1000000] [--seed 7] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from fraudstream.simulator import SimulationConfig, simulate, write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="keep the files here")
    args = parser.parse_args()

    config = SimulationConfig(n_transactions=args.transactions, seed=args.seed)
    started = time.perf_counter()
    sim = simulate(config)
    elapsed = time.perf_counter() - started
    rows = sim.transactions.num_rows
    print(f"simulate          {elapsed:7.2f} s  {rows / elapsed:12,.0f} rows/s  ({rows:,} rows)")

    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        for fmt in ("parquet", "jsonl"):
            started = time.perf_counter()
            tx_path, labels_path = write(sim, out / fmt, fmt)
            elapsed = time.perf_counter() - started
            size = (tx_path.stat().st_size + labels_path.stat().st_size) / 1e6
            print(
                f"write {fmt:11} {elapsed:7.2f} s  {rows / elapsed:12,.0f} rows/s  {size:8.1f} MB"
            )

    scenarios = Counter(sim.transactions["scenario"].to_pylist())
    legit = scenarios.pop("")
    fraud = sum(scenarios.values())
    print(f"fraud rate        {fraud / rows:.3%} ({fraud:,} of {rows:,}; legit {legit:,})")
    for name, count in scenarios.most_common():
        print(f"  {name:22} {count / rows:.3%}  ({count:,})")
    sources = Counter(sim.labels["source"].to_pylist())
    print(f"labels            {sim.labels.num_rows:,}  {dict(sources)}")


if __name__ == "__main__":
    main()
