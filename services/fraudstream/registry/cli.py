"""`fraudctl models`: list, show, compare, promote, retire and roll back model versions,
and the history of every stage change (people's and the trainer's).

Attach with `cli.add_command(models)`. The registry root is `--registry`, else
`FRAUD_REGISTRY_DIR`, else `models`. Stage changes print the `ModelEvent` as JSON.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from fraudstream.contracts import ModelEvent
from fraudstream.errors import FraudStreamError
from fraudstream.json_output import JSON_OPTION, echo_json
from fraudstream.registry.compare import fmt, metrics_table
from fraudstream.registry.stages import Stage
from fraudstream.registry.store import Registry, VersionDetails

pass_registry = click.make_pass_decorator(Registry)
actor_option = click.option(
    "--actor", envvar="FRAUD_ACTOR", default="operator", show_default=True, help="Who acts."
)
note_option = click.option("--note", default="", help="Free text kept with the event.")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Our errors become one-line CLI errors (exit code 1)."""
    try:
        yield
    except FraudStreamError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("models")
@click.option(
    "--registry",
    "registry_dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FRAUD_REGISTRY_DIR",
    default="models",
    show_default=True,
    help="Registry root directory (env FRAUD_REGISTRY_DIR).",
)
@click.pass_context
def models(ctx: click.Context, registry_dir: Path) -> None:
    """Inspect, compare and promote registered model versions."""
    ctx.obj = Registry(registry_dir)


@models.command("list")
@click.argument("name", required=False)
@JSON_OPTION
@pass_registry
def list_(registry: Registry, name: str | None, as_json: bool) -> None:
    """List models, or the versions of NAME with their stages."""
    with _errors():
        if as_json:
            if name is None:
                champions = {m: registry.champion(m) for m in registry.model_names()}
                echo_json([{"model_name": m, "champion": c.version if c else None}
                           for m, c in champions.items()])  # fmt: skip
            else:
                echo_json(registry.list(name))
            return
        if name is None:
            for model in registry.model_names():
                champion = registry.champion(model)
                click.echo(f"{model}\tchampion: {champion.version if champion else '-'}")
            return
        click.echo("version\tstage\tcanary share\tregistered (UTC)")
        for v in registry.list(name):
            share = "-" if v.canary_share is None else f"{v.canary_share:g}"
            click.echo(
                f"{v.version}\t{v.stage.value}\t{share}\t{v.registered_at:%Y-%m-%d %H:%M:%S}"
            )


def _summary(details: VersionDetails) -> str:
    v, t = details.version, details.ensemble.thresholds
    windows = ", ".join(
        f"{w.name} {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d} ({w.rows} rows, {w.fraud_rate:.3%} fraud)"
        for w in details.training.windows
    )
    parity = ", ".join(f"{n} {p.max_abs_diff:.2g}" for n, p in details.metrics.parity.items())
    return "\n".join(
        [
            f"{v.model_name} {v.version}  [{v.stage.value}]  {v.path}",
            f"windows: {windows}",
            f"thresholds: review >= {t.review:.6f}, decline >= {t.decline:.6f} "
            f"(validation review {t.validation_review_rate:.3%}, decline "
            f"{t.validation_decline_rate:.3%}, precision {fmt(t.validation_decline_precision)})",
            f"ONNX parity (max abs diff): {parity}",
            "test window:",
            metrics_table(details.metrics.test),
        ]
    )


@models.command()
@click.argument("name")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Everything recorded, as JSON.")
@pass_registry
def show(registry: Registry, name: str, version: str, as_json: bool) -> None:
    """Show VERSION of NAME: stage, data windows, thresholds, metrics, parity."""
    with _errors():
        details = registry.show(name, version)
        evaluation = registry.evaluation(name, version)
    if as_json:
        click.echo(details.model_dump_json(indent=2))
        return
    click.echo(_summary(details))
    if evaluation is not None:
        click.echo(_evaluation_line(json.loads(evaluation)))


def _evaluation_line(doc: dict[str, Any]) -> str:
    """The trainer's comparison with the champion (`retrain.job.Evaluation`), in one line."""

    def side(role: str) -> str:
        s = doc.get(role)
        if not s:
            return f"{role}: none"
        return (f"{role} {s['version']}: recall {s['recall']:.3f}, decline precision "
                f"{fmt(s['decline_precision'])}, review {s['review_rate']:.2%}")  # fmt: skip

    d = doc.get("recall_difference")
    diff = "" if not d else (f"; recall difference {d['estimate']:+.3f} [{d['low']:+.3f}, "
                             f"{d['high']:+.3f}] at {d['confidence']:.0%}")  # fmt: skip
    return (f"evaluation {doc['window_start'][:10]}..{doc['window_end'][:10]} "
            f"({doc['challenger']['decisions']:,} transactions): {side('challenger')}; "
            f"{side('champion')}{diff}")  # fmt: skip


@models.command()
@click.argument("name")
@click.option("--version", "only", default=None, help="Only this version's events.")
@JSON_OPTION
@pass_registry
def history(registry: Registry, name: str, only: str | None, as_json: bool) -> None:
    """Every stage change of NAME, oldest first: when, what, who, and the note."""
    with _errors():
        events = [e for e in registry.events(name) if only is None or e.version == only]
    if as_json:
        echo_json(events)
        return
    click.echo("at (UTC)\tevent\tversion\tactor\tnote")
    for e in events:
        share = f" ({e.canary_share:g} of cards)" if e.canary_share is not None else ""
        click.echo(f"{e.at:%Y-%m-%d %H:%M:%S}\t{e.event.value}{share}\t{e.version}\t"
                   f"{e.actor}\t{e.note}")  # fmt: skip


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data or "y" not in data:
            raise click.ClickException(f"{path} must hold arrays 'X' (n x f) and 'y' (0/1)")
        return np.asarray(data["X"], dtype=np.float32), np.asarray(data["y"])


@models.command()
@click.argument("name")
@click.argument("version_a")
@click.argument("version_b")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Labelled transactions (.jsonl/.parquet/.csv with is_fraud), or an .npz with X "
    "(float32, feature_spec order) and y (0/1).",
)
@click.option("--json", "as_json", is_flag=True)
@pass_registry
def compare(
    registry: Registry, *, name: str, version_a: str, version_b: str, data: Path, as_json: bool
) -> None:
    """Score VERSION_A and VERSION_B of NAME on the same labelled window."""
    if data.suffix == ".npz":
        X, y = _load_npz(data)
        with _errors():
            result = registry.compare(name, version_a, version_b, X, y)
    else:
        # Labelled transactions: each version gets features from its own feature spec.
        from fraudstream.trainer import labelled_matrix_builder  # noqa: PLC0415 - train-time

        build, y = labelled_matrix_builder(data)
        with _errors():
            result = registry.compare(name, version_a, version_b, build, y)
    click.echo(result.model_dump_json(indent=2) if as_json else result.table())


@models.command()
@click.argument("name")
@click.argument("version")
@click.option(
    "--stage",
    type=click.Choice([Stage.CHAMPION.value, Stage.CANARY.value, Stage.SHADOW.value]),
    default=Stage.CHAMPION.value,
    show_default=True,
)
@click.option("--share", type=click.FloatRange(0, 1, min_open=True), help="Canary share.")
@actor_option
@note_option
@pass_registry
def promote(
    registry: Registry,
    *,
    name: str,
    version: str,
    stage: str,
    share: float | None,
    actor: str,
    note: str,
) -> None:
    """Move VERSION of NAME to shadow, canary (--share) or champion (retires the old one)."""
    with _errors():
        event = registry.set_stage(name, version, stage, actor=actor, canary_share=share, note=note)
    _announce(event)


@models.command()
@click.argument("name")
@click.argument("version")
@actor_option
@note_option
@pass_registry
def retire(registry: Registry, name: str, version: str, actor: str, note: str) -> None:
    """Retire VERSION of NAME (not the champion: promote another or roll back)."""
    with _errors():
        event = registry.set_stage(name, version, Stage.RETIRED, actor=actor, note=note)
    _announce(event)


@models.command()
@click.argument("name")
@actor_option
@note_option
@pass_registry
def rollback(registry: Registry, name: str, actor: str, note: str) -> None:
    """Retire NAME's champion and restore the previous champion."""
    with _errors():
        event = registry.rollback(name, actor=actor, note=note)
    _announce(event)


def _announce(event: ModelEvent) -> None:
    """Print the event and publish it on the compacted `fraud.models` topic for scorers."""
    click.echo(event.model_dump_json())
    from fraudstream import kafka_clients  # noqa: PLC0415 - only stage changes need Kafka
    from fraudstream.contracts import encode  # noqa: PLC0415
    from fraudstream.localstack.stack import resolve_endpoints  # noqa: PLC0415
    from fraudstream.settings import get_settings  # noqa: PLC0415

    settings = get_settings()
    try:
        endpoints = resolve_endpoints(settings)
    except FraudStreamError as exc:
        click.echo(f"not published ({exc}); running scorers pick it up on restart", err=True)
        return
    producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap)
    producer.produce(settings.topic_models, encode(event), key=event.model_name.encode())
    if producer.flush(10) != 0:
        click.echo(f"could not publish to {settings.topic_models} within 10 s", err=True)
        return
    click.echo(f"published to {settings.topic_models}: running scorers swap between batches")
