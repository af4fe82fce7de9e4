"""Which label delay for label risk: train on the simulator with each `label_delay_days`,
and without any label risk feature, and print the ensemble's validation and test metrics.

Two simulations of the same seed: the default scenarios, and the default ones plus the
compromised terminal (fraud on the merchant itself, where merchant risk matters). The
choice of the default delay reads the validation column; the test column is the honest
estimate. One training per line, ~1.5 minutes each for 200,000 rows on 2 cores.

    python load_tests/bench_label_delay.py [--transactions 200000] [--delays 0 2 7]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fraudstream.features.spec import FeatureConfig, catalog
from fraudstream.model.train_config import TrainConfig
from fraudstream.simulator import ScenarioConfig, SimulationConfig
from fraudstream.trainer import simulated_history, training_data
from fraudstream.training.train import train

REPO = Path(__file__).resolve().parents[1]
RISK = tuple(n for n in catalog() if "_label_risk_" in n or "_delayed_count_" in n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--delays", type=int, nargs="+", default=[0, 2, 7])
    args = parser.parse_args()
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")
    base = FeatureConfig.from_yaml(REPO / "config" / "features.yaml")
    variants = [(f"delay {d}", base.model_copy(update={"label_delay_days": d}))
                for d in args.delays]  # fmt: skip
    variants.append(("no label risk", base.model_copy(update={"exclude": RISK})))
    plain = SimulationConfig(seed=args.seed, n_transactions=args.transactions, days=args.days)
    terminal = plain.model_copy(update={"compromised_terminal": ScenarioConfig(weight=0.25)})
    print(f"{'simulation':22} {'features':14} {'val AP':>7} {'test AP':>8} {'test R@0.1%':>11}")
    for sim_name, sim in (("default", plain), ("+compromised_terminal", terminal)):
        history = simulated_history(sim)
        for name, features in variants:
            result = train(training_data(history, features.resolve()), TrainConfig(seed=args.seed))
            val, test = (result.metrics.validation["ensemble"], result.metrics.test["ensemble"])
            print(f"{sim_name:22} {name:14} {val.auprc:7.4f} {test.auprc:8.4f} "
                  f"{test.recall_at_fpr_0_1pct:11.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
