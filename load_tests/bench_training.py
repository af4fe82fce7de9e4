"""Training benchmark: simulate N transactions, then features + models + export + registry.

Prints wall time per stage, peak memory (max RSS of this process) and, for each ensemble
member and the ensemble, AUPRC and recall at 0.1 % FPR on the test window: the last 20 %
of the simulated period, later than anything used for fitting, calibration or thresholds.

    python load_tests/bench_training.py [--transactions 1000000] [--days 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from fraudstream.features.spec import FeatureConfig
from fraudstream.registry import Registry
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import StageTimes, simulated_history, train_and_register
from fraudstream.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")

    times = StageTimes()
    started = time.perf_counter()
    config = SimulationConfig(seed=args.seed, n_transactions=args.transactions, days=args.days)
    history = simulated_history(config)
    times.record("simulate+validate", started)
    features = FeatureConfig.from_yaml(REPO / "config" / "features.yaml")
    with tempfile.TemporaryDirectory() as registry_dir:
        outcome = train_and_register(
            history, features=features, config=TrainConfig(seed=args.seed),
            registry=Registry(registry_dir), name="bench", times=times,
        )  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    total = sum(times.seconds.values())
    print(f"{len(history):,} transactions, {int(history.y.sum()):,} fraud, {args.days:g} days")
    for stage, seconds in times.seconds.items():
        print(f"  {stage:22} {seconds:7.1f} s")
    print(f"  {'total':22} {total:7.1f} s   peak RSS {peak_mb:,.0f} MB")
    test = outcome.result.metrics.test
    print(f"test window: {test['ensemble'].rows:,} rows, {test['ensemble'].frauds} fraud")
    print(f"  {'scorer':10} {'AUPRC':>7} {'recall@0.1%FPR':>15} {'recall@1%FPR':>13}")
    for name, metrics in test.items():
        print(
            f"  {name:10} {metrics.auprc:7.3f} {metrics.recall_at_fpr_0_1pct:15.3f} "
            f"{metrics.recall_at_fpr_1pct:13.3f}"
        )


if __name__ == "__main__":
    main()
