"""Backtest benchmark: N simulated transactions archived, then `fraudctl backtest`'s replay.

Writes the simulator's history in the archive layout (`simulator.archive`), trains a small
model (or uses --registry's champion), and times each stage of a backtest of the whole
history: the DuckDB read, the replay through the scorer's stages, the report. The
baseline, measured in the same run, is the feature pipeline alone on the same rows
(`features.pipeline.replay`, what training does): the replay's extra cost is conversion,
rules, model and decisions. The target is 1,000,000 transactions in under 2 minutes.

    python load_tests/bench_backtest.py [--transactions 1000000] [--days 30]
        [--partitions 6] [--registry DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.features.pipeline import replay as pipeline_replay
from fraudstream.features.spec import FeatureConfig
from fraudstream.history import report
from fraudstream.history.backtest import Candidate, Window, replay
from fraudstream.history.query import Archive, TopicNames
from fraudstream.history.rows import EPOCH, archived_transactions
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.models import single_model_set
from fraudstream.simulator import SimulationConfig
from fraudstream.simulator.archive import archive_tables, write_topic
from fraudstream.simulator.simulate import simulate
from fraudstream.trainer import simulated_history, train_and_register

REPO = Path(__file__).resolve().parents[1]
TOPICS = TopicNames("transactions", "fraud.decisions", "fraud.labels")


def _small_model(root: Path) -> Registry:
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")
    history = simulated_history(SimulationConfig(seed=21, n_transactions=20_000, days=10))
    config = TrainConfig(seed=1, split_fractions=(0.5, 0.3, 0.2), parity_rows=300,
                         lightgbm=LightGBMParams(num_boost_round=100, num_leaves=31))  # fmt: skip
    registry = Registry(root)
    train_and_register(history, features=FeatureConfig.from_yaml(REPO / "config" / "features.yaml"),
                       config=config, registry=registry, name="fraud")  # fmt: skip
    return registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backtest-"))
    started = time.perf_counter()
    sim = simulate(SimulationConfig(seed=args.seed, n_transactions=args.transactions,
                                    days=args.days))  # fmt: skip
    transactions, labels = archive_tables(sim, args.partitions)
    files = write_topic(work, TOPICS.transactions, transactions)
    files += write_topic(work, TOPICS.labels, labels)
    print(f"simulated and archived {len(transactions):,} transactions, {len(labels):,} labels "
          f"in {files} files: {time.perf_counter() - started:.1f} s")  # fmt: skip
    registry = Registry(args.registry) if args.registry else _small_model(work / "models")
    models = single_model_set(registry, "fraud", "champion")
    candidate = Candidate(RulePack.from_yaml((REPO / "config" / "rules.yaml").read_text()), models)

    with Archive(str(work), TOPICS) as archive:
        started = time.perf_counter()
        newest = archive.newest_transaction_time()
        assert newest is not None
        window = Window(EPOCH, newest + timedelta(microseconds=1), datetime.now(UTC))
        history = archive.labelled_history(window.start, window.end, window.as_of)
        fraud = archive.fraud_labels(window.as_of)
        read_s = time.perf_counter() - started
    n = history.num_rows
    started = time.perf_counter()
    txs = archived_transactions(history)
    baseline = pipeline_replay(FeaturePipeline(scoring_spec(None)), txs)
    baseline_s = time.perf_counter() - started
    assert baseline.shape[0] == n
    del txs, baseline
    started = time.perf_counter()
    replayed = replay(history, fraud, candidate, window.start)
    replay_s = time.perf_counter() - started
    started = time.perf_counter()
    result = report.build(replayed, candidate, window)
    report_s = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{'stage':<34} {'seconds':>8} {'rows/s':>10} {'us/row':>8}")
    for stage, seconds in (
        ("read (DuckDB join)", read_s),
        ("baseline: feature pipeline alone", baseline_s),
        ("replay (scorer stages)", replay_s),
        ("report", report_s),
    ):
        print(f"{stage:<34} {seconds:8.1f} {n / seconds:10,.0f} {seconds / n * 1e6:8.1f}")
    total = read_s + replay_s + report_s
    print(
        f"backtest total {total:.1f} s for {n:,} transactions "
        f"({'within' if total < 120 else 'OVER'} the 2-minute target); replay "
        f"{replay_s / baseline_s:.2f}x the feature pipeline alone; peak RSS {peak_gib:.1f} GiB"
    )
    candidate_side = result.sides[report.CANDIDATE]
    print(f"decisions: {candidate_side.counts}; fraud caught {candidate_side.fraud_declined:,} "
          f"of {candidate_side.fraud:,}")  # fmt: skip


if __name__ == "__main__":
    main()
