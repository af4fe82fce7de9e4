"""`fraudctl train`: labelled history (a file or the simulator) to a registered model.

The training stack (`fraudstream.trainer`, scikit-learn and the ONNX converters of the
`train` extra) is imported when a command runs, so that `fraudctl` itself, and with it
`fraudctl scorer`, starts on an install without that extra.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fraudstream.datasets import LabelledHistory, load_labelled
from fraudstream.features.spec import FeatureConfig
from fraudstream.history.rows import EPOCH
from fraudstream.model.train_config import train_config
from fraudstream.registry import Registry
from fraudstream.simulator import SimulationConfig

if TYPE_CHECKING:
    from fraudstream.trainer import TrainWindow

DEFAULT_FEATURES = Path("config/features.yaml")


_REGISTRY = click.option(
    "--registry", "registry_dir", type=click.Path(path_type=Path), default=Path("models"),
    envvar="FRAUD_REGISTRY_DIR", show_default=True,
)  # fmt: skip
_NAME = click.option("--name", default="fraud", show_default=True,
                     help="Model name in the registry.")  # fmt: skip


def _history_options(command: Callable[..., None]) -> Callable[..., None]:
    """The labelled history a command reads: a file (with its labels) or the simulator."""
    for option in reversed([
        click.option("--data", "data_path", type=click.Path(path_type=Path, exists=True),
                     help="Labelled transactions (.jsonl, .parquet or .csv); omit to simulate."),
        click.option("--labels", "labels_path", type=click.Path(path_type=Path, exists=True),
                     help="Label messages (when each label became known) for --data."),
        click.option("--label-column", default="is_fraud", show_default=True),
        click.option("--label-delay-days", type=click.FloatRange(min=0), default=30.0,
                     show_default=True, help="Assumed label delay when --labels is not given."),
        click.option("--simulate", "n_simulated", type=click.IntRange(min=1000),
                     default=200_000, show_default=True,
                     help="Simulated transactions when --data is not given."),
        click.option("--days", type=click.FloatRange(min=1), default=30.0, show_default=True,
                     help="Simulated period."),
        click.option("--seed", type=int, default=7, show_default=True),
        click.option("--max-invalid", type=click.FloatRange(min=0, max=1), default=0.01,
                     show_default=True,
                     help="Share of --data rows that may fail the contract (skipped, counted)."),
    ]):  # fmt: skip
        command = option(command)
    return command


def _load_history(
    data_path: Path | None, labels_path: Path | None, label_column: str,
    label_delay_days: float, n_simulated: int, days: float, seed: int, max_invalid: float,
) -> tuple[LabelledHistory, dict[str, str]]:  # fmt: skip
    """The history, and each fraud's group: its scenario (simulated) or label source."""
    if data_path is None:
        from fraudstream.trainer import simulated_history_and_scenarios  # noqa: PLC0415

        config = SimulationConfig(seed=seed, n_transactions=n_simulated, days=days)
        return simulated_history_and_scenarios(config)
    history = load_labelled(
        data_path, label_column=label_column, labels_path=labels_path,
        label_delay=timedelta(days=label_delay_days), max_invalid_share=max_invalid,
    )  # fmt: skip
    for reason, count in history.rejected.items():
        click.echo(f"skipped {count} invalid rows: {reason}", err=True)
    return history, {label.transaction_id: label.source.value for label in history.labels}


@click.command("train")
@_history_options
@_NAME
@_REGISTRY
@click.option(
    "--features",
    "features_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    envvar="FRAUD_FEATURES_FILE",
    help="Feature set (default: config/features.yaml if present, else the whole catalog).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Training configuration (YAML, the fields of training.json's `config`, e.g. "
    "lightgbm.early_stopping_rounds); the options below override it.",
)
@click.option(
    "--train-from",
    type=click.DateTime(),
    default=None,
    help="Train on rows from this time (UTC); earlier rows only warm state up.",
)
@click.option(
    "--train-to",
    type=click.DateTime(),
    default=None,
    help="Train on rows before this time (UTC): the time the model is trained at.",
)
@click.option(
    "--mature-days",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Leave out the last N days before --train-to: labels not known yet.",
)
@click.option(
    "--review-budget",
    type=click.FloatRange(min=0.0001, max=0.5),
    default=None,
    help="Share of traffic reviewers can handle  [default: 0.005].",
)
@click.option(
    "--decline-precision",
    type=click.FloatRange(min=0.01, max=1),
    default=None,
    help="Precision automatic declines must reach  [default: 0.9].",
)
@click.option(
    "--unless-champion",
    is_flag=True,
    help="Do nothing (exit 0) when NAME already has a champion: a deployment's first-model "
    "job, safe to run on every start.",
)
@click.pass_context
def train_command(
    ctx: click.Context, data_path: Path | None, labels_path: Path | None, label_column: str,
    label_delay_days: float, n_simulated: int, days: float, seed: int, max_invalid: float,
    name: str, registry_dir: Path, features_file: Path, config_file: Path | None,
    train_from: datetime | None, train_to: datetime | None, mature_days: float,
    review_budget: float | None, decline_precision: float | None, unless_champion: bool,
) -> None:  # fmt: skip
    """Train, export and register a model version (the first one becomes champion)."""
    if unless_champion and (champion := Registry(registry_dir).champion(name)) is not None:
        click.echo(f"{name} has a champion ({champion.version}): nothing to train")
        return
    from fraudstream.trainer import StageTimes, train_and_register  # noqa: PLC0415

    times = StageTimes(say=lambda line: click.echo(line, err=True))
    started = time.perf_counter()
    history, _groups = _load_history(data_path, labels_path, label_column, label_delay_days,
                                     n_simulated, days, seed, max_invalid)  # fmt: skip
    times.record("load", started)
    click.echo(f"{len(history)} transactions, {int(history.y.sum())} fraud, "
               f"{len(history.labels)} labels")  # fmt: skip
    outcome = train_and_register(
        history, features=_feature_config(features_file),
        config=train_config(
            config_file, review_budget=review_budget, decline_precision=decline_precision,
            seed=seed if config_file is None or _given(ctx, "seed") else None,
        ),
        registry=Registry(registry_dir), name=name, times=times,
        window=_window(train_from, train_to, mature_days),
    )  # fmt: skip
    info = outcome.result.info
    if info.warmup_rows or info.immature_rows:
        click.echo(f"window: {info.warmup_rows} rows warmed state only, {info.immature_rows} "
                   f"too recent left out, {info.rows} trained on")  # fmt: skip
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


def _window(start: datetime | None, end: datetime | None, mature_days: float) -> TrainWindow | None:
    if start is None and end is None and not mature_days:
        return None
    if mature_days and end is None:
        raise click.UsageError("--mature-days needs --train-to (the time labels are known at)")
    from fraudstream.trainer import TrainWindow  # noqa: PLC0415

    return TrainWindow(start.replace(tzinfo=UTC) if start else None,
                       end.replace(tzinfo=UTC) if end else None, mature_days)  # fmt: skip


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT


def _feature_config(path: Path | None) -> FeatureConfig:
    path = path or (DEFAULT_FEATURES if DEFAULT_FEATURES.exists() else None)
    if path is None:
        click.echo("features: whole catalog (no config/features.yaml here)")
        return FeatureConfig()
    click.echo(f"features: {path}")
    return FeatureConfig.from_yaml(path)


@click.command("evaluate")
@click.argument("version")
@_history_options
@click.option(
    "--from",
    "start",
    type=click.DateTime(),
    default=None,
    help="First event time evaluated (UTC; default: the last 20 % of the rows).",
)
@click.option(
    "--to",
    "end",
    type=click.DateTime(),
    default=None,
    help="Evaluate before this time (UTC; default: after the last row).",
)
@_NAME
@_REGISTRY
@click.option("--json", "as_json", is_flag=True, help="Print the evaluation as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the precision-recall curve as a PNG.")  # fmt: skip
def evaluate_command(
    version: str, data_path: Path | None, labels_path: Path | None, label_column: str,
    label_delay_days: float, n_simulated: int, days: float, seed: int, max_invalid: float,
    start: datetime | None, end: datetime | None, name: str, registry_dir: Path,
    as_json: bool, plot_path: Path | None,
) -> None:  # fmt: skip
    """Score a registered VERSION (or `champion`) on a labelled period through the serving
    path, with warm-up on the rows before --from."""
    from fraudstream.history import evaluate  # noqa: PLC0415
    from fraudstream.scoring.models import single_model_set  # noqa: PLC0415

    history, groups = _load_history(data_path, labels_path, label_column, label_delay_days,
                                    n_simulated, days, seed, max_invalid)  # fmt: skip
    micros = history.event_micros()
    at = [EPOCH + timedelta(microseconds=int(micros[int(len(micros) * 0.8)])),
          EPOCH + timedelta(microseconds=int(micros[-1]) + 1)]  # fmt: skip
    begin = start.replace(tzinfo=UTC) if start else at[0]
    finish = end.replace(tzinfo=UTC) if end else at[1]
    models = single_model_set(Registry(registry_dir), name, version)
    result = evaluate.run(history, models, begin, finish, groups=groups)
    click.echo(json.dumps(result.to_dict(), indent=2, default=str) if as_json
               else evaluate.render(result))  # fmt: skip
    if plot_path is not None:
        evaluate.plot(result, plot_path)
        click.echo(f"precision-recall curve written to {plot_path}", err=as_json)
