"""Training benchmark: simulate N transactions, then features + models + export + registry.

Prints wall time per stage, peak memory (max RSS of this process) and, for each ensemble
member and the ensemble, AUPRC, ROC AUC and recall at 0.1 % and 1 % FPR on the test
window: the last 20 % of the simulated period, later than anything used for fitting,
calibration or thresholds. Then the share of test rows tied at one score, the calibrator
chosen and the review rates (band and disagreement).

    python load_tests/bench_training.py [--transactions 1000000] [--days 60]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from fraudstream.features.spec import FeatureConfig
from fraudstream.model.train_config import TrainConfig
from fraudstream.registry import Registry
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import StageTimes, simulated_history, train_and_register

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
    result = outcome.result
    test = result.metrics.test
    print(f"test window: {test['ensemble'].rows:,} rows, {test['ensemble'].frauds} fraud")
    print(
        f"  {'scorer':10} {'AUPRC':>7} {'ROC AUC':>8} {'recall@0.1%FPR':>15} {'recall@1%FPR':>13}"
    )
    for name, metrics in test.items():
        print(
            f"  {name:10} {metrics.auprc:7.4f} {metrics.roc_auc:8.4f} "
            f"{metrics.recall_at_fpr_0_1pct:15.3f} {metrics.recall_at_fpr_1pct:13.3f}"
        )
    scores = result.test_scores["ensemble"]
    _, counts = np.unique(scores, return_counts=True)
    ensemble, t = result.ensemble, result.ensemble.thresholds
    print(f"  most test rows tied at one ensemble score: {counts.max() / len(scores):.2%}")
    print(f"  calibrator {ensemble.calibrator.kind}, cross-validated log-loss "
          f"{ensemble.calibration_log_loss}")  # fmt: skip
    print(f"  review rate: validation {t.validation_review_rate:.3%} (band "
          f"{t.validation_band_rate:.3%}), test {test['ensemble'].review_rate:.3%}; "
          f"disagreement reviews {'on' if ensemble.disagreement_reviews else 'off'} "
          f"(margin {ensemble.disagreement_margin:.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
