"""`fraudctl train`: labelled history (a file or the simulator) to a registered model."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import click

from fraudstream.datasets import load_labelled
from fraudstream.features.spec import FeatureConfig
from fraudstream.registry import Registry
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import StageTimes, simulated_history, train_and_register
from fraudstream.training.config import TrainConfig

DEFAULT_FEATURES = Path("config/features.yaml")


@click.command("train")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path, exists=True),
    help="Labelled transactions (.jsonl, .parquet or .csv); omit to simulate.",
)
@click.option(
    "--labels",
    "labels_path",
    type=click.Path(path_type=Path, exists=True),
    help="Label messages (when each label became known) for --data.",
)
@click.option("--label-column", default="is_fraud", show_default=True)
@click.option(
    "--label-delay-days",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Assumed label delay when --labels is not given.",
)
@click.option(
    "--simulate",
    "n_simulated",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Simulated transactions when --data is not given.",
)
@click.option(
    "--days",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Simulated period.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--name", default="fraud", show_default=True, help="Model name in the registry.")
@click.option(
    "--registry",
    "registry_dir",
    type=click.Path(path_type=Path),
    default=Path("models"),
    envvar="FRAUD_REGISTRY_DIR",
    show_default=True,
)
@click.option(
    "--features",
    "features_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    envvar="FRAUD_FEATURES_FILE",
    help="Feature set (default: config/features.yaml if present, else the whole catalog).",
)
@click.option(
    "--review-budget",
    type=click.FloatRange(min=0.0001, max=0.5),
    default=0.005,
    show_default=True,
    help="Share of traffic reviewers can handle.",
)
@click.option(
    "--decline-precision",
    type=click.FloatRange(min=0.01, max=1),
    default=0.9,
    show_default=True,
    help="Precision automatic declines must reach.",
)
def train_command(
    data_path: Path | None, labels_path: Path | None, label_column: str,
    label_delay_days: float, n_simulated: int, days: float, seed: int, name: str,
    registry_dir: Path, features_file: Path, review_budget: float, decline_precision: float,
) -> None:  # fmt: skip
    """Train, export and register a model version (the first one becomes champion)."""
    times = StageTimes()
    started = time.perf_counter()
    if data_path is None:
        config = SimulationConfig(seed=seed, n_transactions=n_simulated, days=days)
        history = simulated_history(config)
    else:
        history = load_labelled(
            data_path, label_column=label_column, labels_path=labels_path,
            label_delay=timedelta(days=label_delay_days),
        )  # fmt: skip
        for reason, count in history.rejected.items():
            click.echo(f"skipped {count} invalid rows: {reason}")
    times.record("load", started)
    click.echo(f"{len(history)} transactions, {int(history.y.sum())} fraud, "
               f"{len(history.labels)} labels")  # fmt: skip
    outcome = train_and_register(
        history, features=_feature_config(features_file),
        config=TrainConfig(seed=seed, review_budget=review_budget,
                           target_decline_precision=decline_precision),
        registry=Registry(registry_dir), name=name, times=times,
    )  # fmt: skip
    test = outcome.result.metrics.test
    for member, metrics in test.items():
        click.echo(
            f"  {member:10} AUPRC {metrics.auprc:.3f}  "
            f"recall@0.1%FPR {metrics.recall_at_fpr_0_1pct:.3f}  "
            f"review {metrics.review_rate:.2%}  decline {metrics.decline_rate:.2%}"
        )
    stages = "  ".join(f"{k} {v:.1f}s" for k, v in times.seconds.items())
    click.echo(f"timings: {stages}")
    state = "champion" if outcome.promoted else outcome.version.stage.value
    click.echo(f"registered {name} {outcome.version.version} ({state}) at {outcome.version.path}")
    click.echo(f"model card: {outcome.version.path / 'MODEL_CARD.md'}")


def _feature_config(path: Path | None) -> FeatureConfig:
    path = path or (DEFAULT_FEATURES if DEFAULT_FEATURES.exists() else None)
    if path is None:
        click.echo("features: whole catalog (no config/features.yaml here)")
        return FeatureConfig()
    click.echo(f"features: {path}")
    return FeatureConfig.from_yaml(path)
