"""Retrain benchmark: the trainer's retrain job (`retrain.job.retrain`) on a simulated archive.

For each size, N simulated transactions over about 45 days, ending a day before now (so
the labels given by now are "known by now"), are written in the archive layout
(`simulator.archive`) and a small champion is trained into a fresh registry; then
`retrain` reads the archive's labelled history, trains a challenger (config/train.yaml
unless --config) and replays champion and challenger on the evaluation window. Prints
wall seconds per stage of the job (`RetrainResult.seconds`), the job's total wall time,
and memory: the retrain process's RSS just before the job and its peak (max RSS) after.

Each size runs in fresh spawned processes: one builds the archive and the champion (its
own peak is printed as "setup peak"), another runs only the retrain, so the peak is the
job's own. The baseline, measured in the same run on a fresh DuckDB connection, is the
archive read alone (`Archive.labelled_history` for the job's window and as-of time): the
job's total less it is what features, training, export and evaluation cost. Everything
lives in a temporary directory, removed at the end; nothing touches the network. A
--max-minutes guard stops before starting another size once exceeded.

    python load_tests/bench_retrain.py [--transactions 50000 150000] [--days 45]
        [--max-minutes 15] [--config config/train.yaml]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.errors import FraudStreamError
from fraudstream.features.spec import FeatureConfig
from fraudstream.history.query import Archive, TopicNames
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import Registry
from fraudstream.retrain.job import RetrainResult, retrain
from fraudstream.retrain.settings import TrainerSettings
from fraudstream.retrain.windows import RetrainWindows
from fraudstream.simulator import SimulationConfig, simulate
from fraudstream.simulator.archive import archive_tables, write_topic
from fraudstream.trainer import simulated_history, train_and_register

REPO = Path(__file__).resolve().parents[1]
MODEL = "fraud"
Report = dict[str, Any]


@dataclass(frozen=True)
class Job:
    """One size's parameters, as the child processes get them (picklable)."""

    transactions: int
    days: float
    fraud_rate: float
    seed: int
    partitions: int
    workdir: Path
    now: datetime  # the job's clock: the same windows for the retrain and the baseline
    config: Path | None
    train_days: float
    eval_days: float
    warmup_days: float
    mature_days: float
    min_frauds: int

    @property
    def archive_dir(self) -> Path:
        return self.workdir / "archive"

    def settings(self) -> TrainerSettings:
        """The trainer's settings, every value that matters given (not read from env)."""
        return TrainerSettings(
            registry_dir=self.workdir / "models", model_name=MODEL,
            archive_url=str(self.archive_dir),
            features_file=REPO / "config" / "features.yaml",
            trainer_config=self.config, rules_file=REPO / "config" / "rules.yaml",
            trainer_train_days=self.train_days, trainer_eval_days=self.eval_days,
            trainer_warmup_days=self.warmup_days, trainer_mature_days=self.mature_days,
            trainer_min_frauds=self.min_frauds,
        )  # fmt: skip


def rss_mib() -> float:
    """This process's resident set now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    """This process's peak resident set so far (ru_maxrss is KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _champion(registry: Registry) -> None:
    """A champion trained in seconds, as tests/integration/scorer_support.py does."""
    history = simulated_history(SimulationConfig(seed=21, n_transactions=12_000, days=10))
    config = TrainConfig(seed=1, split_fractions=(0.5, 0.3, 0.2), parity_rows=300,
                         lightgbm=LightGBMParams(num_boost_round=40, num_leaves=15))  # fmt: skip
    train_and_register(history, features=FeatureConfig.from_yaml(REPO / "config" / "features.yaml"),
                       config=config, registry=registry, name=MODEL)  # fmt: skip


def _windows(job: Job, archive: Archive) -> RetrainWindows:
    """The windows `retrain` plans for this archive at `job.now`."""
    newest = archive.newest_transaction_time()
    assert newest is not None, "the archive holds no transactions"
    return RetrainWindows.plan(
        newest, job.now, train_days=job.train_days, eval_days=job.eval_days,
        warmup_days=job.warmup_days, mature_days=job.mature_days,
    )  # fmt: skip


def setup(job: Job) -> Report:
    """Child 1: simulate and archive, train the champion, then time the baseline read."""
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")
    settings = job.settings()
    topics = TopicNames.from_settings(settings)
    started = time.perf_counter()
    sim = simulate(SimulationConfig(
        seed=job.seed, n_transactions=job.transactions, days=job.days,
        fraud_rate=job.fraud_rate, start=job.now - timedelta(days=job.days + 1),
    ))  # fmt: skip
    transactions, labels = archive_tables(sim, partitions=job.partitions)
    files = write_topic(job.archive_dir, topics.transactions, transactions)
    files += write_topic(job.archive_dir, topics.labels, labels)
    report: Report = {"archived": len(transactions), "labels": len(labels), "files": files,
                      "archive_s": time.perf_counter() - started}  # fmt: skip
    del sim, transactions, labels
    pa.default_memory_pool().release_unused()
    report["rss_after_archive"] = rss_mib()
    started = time.perf_counter()
    _champion(Registry(settings.registry_dir))
    report["champion_s"] = time.perf_counter() - started
    with Archive(str(job.archive_dir), topics) as archive:
        windows = _windows(job, archive)
        started = time.perf_counter()
        rows = archive.labelled_history(windows.warmup_start, windows.eval_end, windows.as_of)
        report["baseline_s"] = time.perf_counter() - started
    t = rows["event_time"]
    train = pc.and_(pc.greater_equal(t, pa.scalar(windows.train_start)),
                    pc.less(t, pa.scalar(windows.eval_start)))  # fmt: skip
    mask = np.asarray(train.to_numpy(zero_copy_only=False), bool)
    fraud = np.asarray(pc.fill_null(rows["is_fraud"], False).to_numpy(zero_copy_only=False), bool)
    report |= {"rows_read": rows.num_rows, "train_rows": int(mask.sum()),
               "train_frauds": int((fraud & mask).sum()), "windows": windows.describe(),
               "setup_peak": peak_mib()}  # fmt: skip
    return report


def run_retrain(job: Job) -> Report:
    """Child 2: only the retrain job, so this process's peak RSS is the job's."""
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")
    settings = job.settings()
    registry = Registry(settings.registry_dir)
    with Archive(settings.archive_url, TopicNames.from_settings(settings)) as archive:
        before = rss_mib()
        started = time.perf_counter()
        try:
            result = retrain(settings, archive, registry, triggers=["bench"],
                             progress=lambda line: print(f"    {line}", flush=True),
                             now=lambda: job.now)  # fmt: skip
        except FraudStreamError as exc:  # as the trainer service counts it: an error run
            result = RetrainResult("error", reason=str(exc))
        wall = time.perf_counter() - started
    evaluation = result.evaluation
    return {"outcome": result.outcome, "reason": result.reason, "seconds": result.seconds,
            "wall_s": wall, "rss_before": before, "peak": peak_mib(),
            "summary": evaluation.summary() if evaluation is not None else ""}  # fmt: skip


def in_child(target: Any, job: Job) -> Report:
    """`target(job)` in a fresh spawned interpreter (own memory, own ru_maxrss)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        report: Report = pool.apply(target, (job,))
    return report


def _table(rows: list[tuple[Job, Report]]) -> None:
    stages: list[str] = []
    for _job, report in rows:
        stages += [s for s in report["seconds"] if s not in stages]
    head = ["transactions", "archive rows read", "train rows", "frauds",
            *(f"{s} s" for s in stages), "total wall s", "baseline read s",
            "read share of total", "setup peak MiB", "RSS before retrain MiB",
            "peak RSS MiB", "retrain's own MiB", "MiB per 1k tx"]  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for job, r in rows:
        own = r["peak"] - r["rss_before"]
        cells = [f"{job.transactions:,}", f"{r['rows_read']:,}", f"{r['train_rows']:,}",
                 f"{r['train_frauds']:,}",
                 *(f"{r['seconds'][s]:.1f}" if s in r["seconds"] else "-" for s in stages),
                 f"{r['wall_s']:.1f}", f"{r['baseline_s']:.2f}",
                 f"{r['baseline_s'] / r['wall_s']:.1%}", f"{r['setup_peak']:,.0f}",
                 f"{r['rss_before']:,.0f}", f"{r['peak']:,.0f}", f"{own:,.0f}",
                 f"{own / (job.transactions / 1000):.2f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--transactions", type=int, nargs="+", default=[50_000, 150_000])
    parser.add_argument("--days", type=float, default=45.0, help="simulated span")
    parser.add_argument("--fraud-rate", type=float, default=0.004)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "train.yaml",
                        help="training configuration of the challenger")  # fmt: skip
    parser.add_argument("--train-days", type=float, default=24.0)
    parser.add_argument("--eval-days", type=float, default=7.0)
    parser.add_argument("--warmup-days", type=float, default=4.0)
    parser.add_argument("--mature-days", type=float, default=7.0)
    parser.add_argument("--min-frauds", type=int, default=20)
    parser.add_argument("--max-minutes", type=float, default=15.0,
                        help="start no further size once this much time has passed")  # fmt: skip
    args = parser.parse_args()
    span = args.train_days + args.eval_days + args.warmup_days + args.mature_days
    if span > args.days:
        parser.error(f"the windows ({span:g} days) do not fit in --days {args.days:g}")
    if not args.config.is_file():
        parser.error(f"no training configuration at {args.config}")
    started = time.monotonic()
    done: list[tuple[Job, Report]] = []
    print(f"{args.days:g} simulated days ending a day ago, fraud rate {args.fraud_rate:g}; "
          f"windows: warm-up {args.warmup_days:g} d, train {args.train_days:g} d, evaluate "
          f"{args.eval_days:g} d, maturity {args.mature_days:g} d; config {args.config}",
          flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        for index, n in enumerate(args.transactions):
            elapsed = (time.monotonic() - started) / 60
            if elapsed > args.max_minutes:
                print(f"stopping after {elapsed:.1f} min (--max-minutes {args.max_minutes:g}): "
                      f"not running {args.transactions[index:]}", flush=True)  # fmt: skip
                break
            job = Job(
                transactions=n, days=args.days, fraud_rate=args.fraud_rate, seed=args.seed,
                partitions=args.partitions, workdir=Path(tmp) / f"size-{index}",
                now=datetime.now(UTC), config=args.config, train_days=args.train_days,
                eval_days=args.eval_days, warmup_days=args.warmup_days,
                mature_days=args.mature_days, min_frauds=args.min_frauds,
            )  # fmt: skip
            print(f"{n:,} transactions: archiving and training the champion", flush=True)
            report = in_child(setup, job)
            print(f"  {report['archived']:,} transactions, {report['labels']:,} labels in "
                  f"{report['files']} files: {report['archive_s']:.1f} s; champion "
                  f"{report['champion_s']:.1f} s; RSS after archiving "
                  f"{report['rss_after_archive']:,.0f} MiB", flush=True)  # fmt: skip
            print(f"  retraining ({report['windows']})", flush=True)
            report |= in_child(run_retrain, job)
            if report["outcome"] != "registered":
                print(f"  {report['outcome']}: {report['reason']}", flush=True)
                continue
            done.append((job, report))
    if done:
        print()
        _table(done)
        print()
    else:
        print("no size registered a challenger: nothing to tabulate")
    for job, report in done:
        print(f"{job.transactions:,}: {report['summary']}")
    print(f"\nwhole run {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
