"""`fraudctl backtest` and `fraudctl rules backtest`: a candidate replayed on the archive."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pyarrow.fs as pafs

from fraudstream.errors import ConfigurationError, FraudStreamError
from fraudstream.history import report as reporting
from fraudstream.history.archiver import ArchiverSettings
from fraudstream.history.backtest import Candidate, Window, load_history, replay
from fraudstream.history.query import Archive, TopicNames
from fraudstream.registry import Registry
from fraudstream.rules.engine import RulePack
from fraudstream.scoring.decide import DecisionPolicy
from fraudstream.scoring.models import ModelSet, single_model_set
from fraudstream.scoring.settings import ScorerSettings

DEFAULT_PLOT = Path("backtest.png")


def local_root(url: str) -> str:
    """The local directory of an archive URL (DuckDB reads files in place)."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme and scheme != "file":
        raise ConfigurationError(
            f"backtests read a local archive; {scheme}:// archives are read by Spark, Trino "
            "or DuckDB with its httpfs extension: copy the window you need (same layout) to "
            "a local directory and pass it with --archive"
        )
    if not scheme:
        return url
    _fs, root = pafs.FileSystem.from_uri(url)
    return str(root)


def candidate_from(rules: Path, model: str, settings: ScorerSettings) -> Candidate:
    """The rule pack in `rules` and the registry's `model` (a version, `champion` or
    `none`), as the scorer would load them."""
    if not rules.is_file():
        raise ConfigurationError(f"rule pack {rules} not found")
    pack = RulePack.from_yaml(rules.read_text(encoding="utf-8"), str(rules))
    policy = DecisionPolicy.from_settings(settings)
    if model == "none":
        return Candidate(pack, ModelSet(), policy)
    registry = Registry(settings.registry_dir)
    return Candidate(pack, single_model_set(registry, settings.model_name, model), policy)


def run(
    *, rules: Path, model: str, days: float, archive_url: str | None, as_of: datetime | None,
    warmup_days: float | None, review_budget: float | None, as_json: bool,
    plot_path: Path | None, examples: int,
) -> None:  # fmt: skip
    """Replay the archive's last `days` with the candidate; print and plot the report."""
    scorer = ScorerSettings()
    url = archive_url if archive_url is not None else ArchiverSettings().archive_url
    root = local_root(url)
    if not Path(root).is_dir():
        raise ConfigurationError(
            f"no archive at {root}: run the archiver (`fraudctl archive`, started by "
            "`make run`) or pass --archive"
        )
    candidate = candidate_from(rules, model, scorer)

    def say(text: str) -> None:
        click.echo(text, err=as_json)  # with --json, stdout carries only the report

    with Archive(root, TopicNames.from_settings(scorer)) as archive:
        window = Window.last_days(archive, days, as_of)
        warmup_from = window.start - timedelta(days=warmup_days) if warmup_days else None
        started = time.monotonic()
        history, labels = load_history(archive, window, warmup_from)
    say(f"read {history.num_rows:,} archived transactions and {labels.num_rows:,} fraud "
        f"labels from {root} in {time.monotonic() - started:.1f} s")  # fmt: skip
    started = time.monotonic()
    with click.progressbar(length=history.num_rows, label="replaying", file=sys.stderr,
                           show_eta=True, show_pos=True) as bar:  # fmt: skip
        replayed = replay(history, labels, candidate, window.start, progress=bar.update)
    elapsed = time.monotonic() - started
    say(f"replayed {history.num_rows:,} transactions in {elapsed:.1f} s "
        f"({history.num_rows / max(elapsed, 1e-9):,.0f}/s)")  # fmt: skip
    result = reporting.build(replayed, candidate, window, review_budget=review_budget,
                             examples=examples)  # fmt: skip
    click.echo(result.to_json() if as_json else reporting.render(result))
    if plot_path is not None:
        say(f"plot written to {reporting.plot(result, plot_path)}")


def _options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--model", default="champion", show_default=True,
                     help="Registry version to score with, `champion`, or `none` (rules only)."),
        click.option("--days", type=float, default=7.0, show_default=True,
                     help="Report the archive's last N days."),
        click.option("--archive", "archive_url", default=None,
                     help="Archive root (default: FRAUD_ARCHIVE_URL)."),
        click.option("--as-of", type=click.DateTime(), default=None,
                     help="Labels known at this UTC time (default: now)."),
        click.option("--warmup-days", type=float, default=None,
                     help="Warm entity state from N days before the window (default: the "
                          "whole archive, which reproduces serving exactly)."),
        click.option("--review-budget", type=float, default=None,
                     help="Share of traffic reviewers can take (default: the model's)."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
                     default=DEFAULT_PLOT, show_default=True,
                     help="PNG with the precision-recall curve and daily rates."),
        click.option("--no-plot", is_flag=True, help="Do not write the plot."),
        click.option("--examples", type=int, default=reporting.EXAMPLES_PER_CHANGE,
                     show_default=True, help="Changed decisions shown per kind of change."),
    ]):  # fmt: skip
        command = option(command)
    return command


def _as_of(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None else None


@click.command("backtest")
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Rule pack (default: FRAUD_RULES_FILE).")  # fmt: skip
@_options
def backtest_command(rules_path: Path | None, no_plot: bool, as_of: datetime | None,
                     **options: object) -> None:  # fmt: skip
    """Replay archived history through the scorer's stages with a candidate rule pack
    and model, and report what would have changed."""
    rules = rules_path if rules_path is not None else ScorerSettings().rules_file
    _run(rules, no_plot, as_of, options)


@click.command("backtest")
@click.argument("rules_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_options
def rules_backtest_command(rules_path: Path, no_plot: bool, as_of: datetime | None,
                           **options: object) -> None:  # fmt: skip
    """Backtest the rule pack in RULES_PATH on the archive before you save it."""
    _run(rules_path, no_plot, as_of, options)


def _run(rules: Path, no_plot: bool, as_of: datetime | None, options: dict[str, object]) -> None:
    if no_plot:
        options["plot_path"] = None
    try:
        run(rules=rules, as_of=_as_of(as_of), **options)  # type: ignore[arg-type]
    except ValueError as exc:
        raise FraudStreamError(str(exc)) from exc
