"""`fraudctl`: the operator CLI for the local stack, topics, schemas and simulated traffic."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import click
import yaml

import fraudstream
from fraudstream import kafka_clients, simulator
from fraudstream.contracts import CONTRACTS, schemas
from fraudstream.errors import FraudStreamError
from fraudstream.features.spec import catalog
from fraudstream.history.backtest_cli import backtest_command, rules_backtest_command
from fraudstream.json_output import JSON_OPTION, echo_json
from fraudstream.localstack.stack import LocalStack, resolve_endpoints
from fraudstream.registry.cli import models
from fraudstream.retrain.cli import retrain_command, trainer_command
from fraudstream.review.cli import review_group
from fraudstream.rules.engine import RulePack
from fraudstream.rules.lists import RedisLists
from fraudstream.rules.model import ListEntity, ListName, RulePackDoc
from fraudstream.scoring.state import redis_client
from fraudstream.settings import CommonSettings, get_settings, mask_url
from fraudstream.simulator import SimulationConfig, live_transactions
from fraudstream.simulator.stream import StreamStats, stream
from fraudstream.state_cli import state_group
from fraudstream.topics import provision, topic_rows, topic_table
from fraudstream.trainer_cli import evaluate_command, train_command

DEFAULT_SCHEMA_DIR = Path("schemas")


@click.group()
@click.version_option(fraudstream.__version__, "--version", prog_name="fraudctl")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """Operate fraudstream: local stack, topics, schemas and simulated traffic."""
    get_settings.cache_clear()  # each invocation reads the environment afresh
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
def up() -> None:
    """Start the embedded Kafka broker and redis-server (no-op when running)."""
    LocalStack(get_settings()).up(say=click.echo)


@cli.command()
def down() -> None:
    """Stop exactly what `up` started."""
    LocalStack(get_settings()).down(say=click.echo)


@cli.command()
@JSON_OPTION
def status(as_json: bool) -> None:
    """Show the embedded stack's endpoints and whether each process runs."""
    settings = get_settings()
    current = LocalStack(settings).status()
    if as_json:
        state = current.state
        echo_json({
            "started": state is not None,
            "kafka": None if state is None else {"version": state.kafka_version,
                "bootstrap": state.kafka_bootstrap, "running": current.kafka_running},
            "redis": None if state is None else {"url": mask_url(state.redis_url),
                                                 "running": current.redis_running},
            "kafka_bootstrap_servers_override": settings.kafka_bootstrap_servers,
            "redis_url_override": mask_url(settings.redis_url) if settings.redis_url else None,
        })  # fmt: skip
        return
    if current.state is None:
        click.echo(f"embedded stack: not started (state dir {settings.state_dir})")
    else:
        state = current.state
        kafka_word = "running" if current.kafka_running else "stopped"
        redis_word = "running" if current.redis_running else "stopped"
        click.echo(f"kafka {state.kafka_version}: {kafka_word} at {state.kafka_bootstrap}")
        click.echo(f"redis: {redis_word} at {mask_url(state.redis_url)}")
    if settings.kafka_bootstrap_servers:
        click.echo(f"KAFKA_BOOTSTRAP_SERVERS overrides: {settings.kafka_bootstrap_servers}")
    if settings.redis_url:
        click.echo(f"REDIS_URL overrides: {mask_url(settings.redis_url)}")


@cli.group()
def topics() -> None:
    """Topics declared in fraudstream.topics."""


@topics.command("create")
def topics_create() -> None:
    """Create missing topics and align configs of existing ones (idempotent)."""
    create_topics(get_settings())


@topics.command("list")
@JSON_OPTION
def topics_list(as_json: bool) -> None:
    """Print the declared topics as a markdown table."""
    if as_json:
        echo_json(topic_rows(get_settings()))
        return
    topic_table(get_settings(), emit=click.echo)


def create_topics(settings: CommonSettings) -> None:
    endpoints = resolve_endpoints(settings)
    admin = kafka_clients.admin_client(settings, endpoints.kafka_bootstrap)
    for change in provision(admin, settings):
        suffix = f" ({change.detail})" if change.detail else ""
        click.echo(f"{change.action:>9}  {change.topic}{suffix}")


@cli.group("lists")
def lists_group() -> None:
    """Block and allow lists the rules consult (kept in Redis)."""


_LIST_ARGS = (
    click.argument("name", type=click.Choice([n.value for n in ListName])),
    click.argument("entity", type=click.Choice([e.value for e in ListEntity])),
)


def _lists() -> RedisLists:
    """The lists the scorer reads: under FRAUD_REDIS_PREFIX, on a cluster if configured."""
    settings = get_settings()
    endpoints = resolve_endpoints(settings)
    client = redis_client(endpoints.redis_url, 5000, cluster=settings.redis_cluster)
    return RedisLists(client, prefix=f"{settings.redis_prefix}:list")


@lists_group.command("add")
@_LIST_ARGS[0]
@_LIST_ARGS[1]
@click.argument("ids", nargs=-1, required=True)
def lists_add(name: str, entity: str, ids: tuple[str, ...]) -> None:
    """Put ids on a list, e.g. `fraudctl lists add block card card-0042`."""
    added = _lists().add(ListName(name), ListEntity(entity), ids)
    click.echo(f"added {added} to {name} {entity}")


@lists_group.command("remove")
@_LIST_ARGS[0]
@_LIST_ARGS[1]
@click.argument("ids", nargs=-1, required=True)
def lists_remove(name: str, entity: str, ids: tuple[str, ...]) -> None:
    """Take ids off a list."""
    removed = _lists().remove(ListName(name), ListEntity(entity), ids)
    click.echo(f"removed {removed} from {name} {entity}")


@lists_group.command("show")
@_LIST_ARGS[0]
@_LIST_ARGS[1]
@JSON_OPTION
def lists_show(name: str, entity: str, as_json: bool) -> None:
    """Print a list's ids."""
    members = list(_lists().members(ListName(name), ListEntity(entity)))
    if as_json:
        echo_json({"list": name, "entity": entity, "ids": members})
        return
    for member in members:
        click.echo(member)


@cli.group("schemas")
def schemas_group() -> None:
    """JSON Schemas of the topic contracts."""


@schemas_group.command("export")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=DEFAULT_SCHEMA_DIR)
@click.option("--check", is_flag=True, help="Fail if the files differ instead of writing.")
def schemas_export(directory: Path, check: bool) -> None:
    """Write one JSON Schema per contract (or check they are current)."""
    if check:
        outdated = schemas.stale(directory, CONTRACTS)
        if outdated:
            raise click.ClickException(
                f"stale schemas in {directory}: {', '.join(outdated)}; "
                "run `fraudctl schemas export`"
            )
        click.echo(f"schemas in {directory} are current")
        return
    for path in schemas.write(directory, CONTRACTS):
        click.echo(f"wrote {path}")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for transactions.<fmt> and labels.<fmt>.",
)
@click.option(
    "--transactions",
    "n_transactions",
    type=click.IntRange(min=100),
    default=100_000,
    show_default=True,
)
@click.option("--days", type=click.FloatRange(min=0.01), default=30.0, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True
)
def generate(out_dir: Path, n_transactions: int, days: float, seed: int, fmt: str) -> None:
    """Write simulated labelled history (transactions with ground truth, late labels)."""
    config = SimulationConfig(seed=seed, n_transactions=n_transactions, days=days)
    started = time.monotonic()
    sim = simulator.simulate(config)
    tx_path, label_path = simulator.write(sim, out_dir, "parquet" if fmt == "parquet" else "jsonl")
    fraud = sum(sim.transactions["is_fraud"].to_pylist())
    click.echo(
        f"wrote {sim.transactions.num_rows} transactions ({fraud} fraud) to {tx_path} and "
        f"{sim.labels.num_rows} labels to {label_path} in {time.monotonic() - started:.1f} s"
    )


@cli.command()
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=100_000),
    default=200.0,
    show_default=True,
    help="Transactions per second.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to run; 0 runs until interrupted.",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--cards", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--merchants", type=click.IntRange(min=1), default=1_000, show_default=True)
def simulate(rate: float, duration: float, seed: int, cards: int, merchants: int) -> None:
    """Stream simulated transactions to the transactions topic."""
    settings = get_settings()
    stats, stop, worker = _start_stream(settings, rate, seed, cards, merchants)
    _run_until(stop, duration, lambda elapsed: click.echo(_progress(elapsed, stats)))
    worker.join()
    click.echo(_progress(None, stats))


@cli.command()
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1, max=100_000),
    default=None,
    help="Transactions per second [default: 200; 1,000 with --drift].",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to run; 0 runs until interrupted (--drift: until the scenario ends).",
)
@click.option(
    "--drift",
    is_flag=True,
    help="Replay a world that drifts and watch the loop retrain, test and promote or "
    'retire a challenger (about four minutes; README "The loop in the demo").',
)
def demo(rate: float | None, duration: float, drift: bool) -> None:
    """The whole flow: stack, topics, a first model, the scorer, live traffic and results."""
    from fraudstream.demo import run_demo  # noqa: PLC0415 - loads the scorer's dependencies
    from fraudstream.scoring.settings import ScorerSettings  # noqa: PLC0415

    settings = ScorerSettings()
    if not (settings.kafka_bootstrap_servers and settings.redis_url):
        LocalStack(settings).up(say=click.echo)
    create_topics(settings)
    click.echo("streaming; Ctrl-C stops the traffic and the scorer (the stack keeps running: "
               "`fraudctl down`)")  # fmt: skip
    rate = rate or (1000.0 if drift else 200.0)
    run_demo(settings, resolve_endpoints(settings), rate, duration, click.echo, drift=drift)


def _start_stream(
    settings: CommonSettings, rate: float, seed: int, cards: int, merchants: int
) -> tuple[StreamStats, threading.Event, threading.Thread]:
    endpoints = resolve_endpoints(settings)
    producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap)
    config = SimulationConfig(seed=seed, n_cards=cards, n_merchants=merchants)
    run_id = uuid.uuid4().hex[:8]
    events = live_transactions(config, datetime.now(UTC), rate, id_prefix=run_id)
    stats, stop = StreamStats(), threading.Event()
    worker = threading.Thread(
        target=stream,
        args=(producer, settings.topic_transactions, events, rate, stop, stats),
        name="simulator",
        daemon=True,
    )
    worker.start()
    return stats, stop, worker


def _run_until(stop: threading.Event, duration: float, report: Callable[[float], None]) -> None:
    def _on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    started = time.monotonic()
    try:
        while not stop.wait(1.0):
            elapsed = time.monotonic() - started
            report(elapsed)
            if duration and elapsed >= duration:
                break
    except KeyboardInterrupt:
        pass
    stop.set()


def _progress(elapsed: float | None, stats: StreamStats) -> str:
    head = "done" if elapsed is None else f"t={elapsed:5.0f}s"
    rate = "" if not elapsed else f" ({stats.sent / elapsed:,.0f}/s)"
    failed = f" failed {stats.failed}: {stats.last_error}" if stats.failed else ""
    return f"{head}  sent {stats.sent}{rate}  delivered {stats.delivered}{failed}"


@cli.group("features")
def features_group() -> None:
    """The feature catalog (choose from it in config/features.yaml)."""


@features_group.command("list")
@JSON_OPTION
def features_list(as_json: bool) -> None:
    """Print every computed feature name, in canonical order."""
    if as_json:
        echo_json(list(catalog()))
        return
    for name in catalog():
        click.echo(name)


cli.add_command(models)


@cli.command("scorer")
def scorer_command() -> None:
    """Run the scorer service (settings from the environment; SIGTERM stops it cleanly)."""
    from fraudstream.scoring.service import serve  # noqa: PLC0415 - loads ONNX Runtime

    logging.getLogger().setLevel(logging.INFO)
    serve()


@cli.group("drift")
def drift_group() -> None:
    """The drift monitor (README "Drift monitor")."""


@drift_group.command("monitor")
def drift_monitor() -> None:
    """Run the drift monitor on fraud.decisions and fraud.labels (settings from the
    environment, FRAUD_DRIFT_*; SIGTERM stops it)."""
    from fraudstream.drift import service  # noqa: PLC0415 - loads faust

    logging.getLogger().setLevel(logging.INFO)
    service.run(service.DriftSettings())


@drift_group.command("status")
@click.option("--url", default=None, help="The monitor's /metrics (default: 127.0.0.1 on "
              "FRAUD_DRIFT_METRICS_PORT, 9402).")  # fmt: skip
@JSON_OPTION
def drift_status(url: str | None, as_json: bool) -> None:
    """Each detector's statistic, threshold, state and last alarm, per model version."""
    from fraudstream.drift.status import fetch, parse, render  # noqa: PLC0415

    port = os.environ.get("FRAUD_DRIFT_METRICS_PORT", "9402")
    try:
        rows = parse(fetch(url or f"http://127.0.0.1:{port}/metrics"))
    except FraudStreamError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        echo_json(rows)
        return
    click.echo(render(rows))


@cli.group("rules")
def rules_group() -> None:
    """Rule packs: validate before the scorer reloads them."""


@rules_group.command("check")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rules_check(path: Path) -> None:
    """Validate a rule pack as the scorer would (exit 1 with the problem), and list it."""
    pack = RulePack.from_yaml(path.read_text(encoding="utf-8"), source=str(path))
    doc = RulePackDoc.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    click.echo(f"{path}: rule pack {pack.version!r}, {len(pack)} enabled of {len(doc.rules)}")
    for rule in doc.rules:
        state = "" if rule.enabled else "  (disabled)"
        click.echo(f"  {rule.id:<28} {rule.action.value:<8} {rule.reason}{state}")


@rules_group.command("publish")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--name",
    "pack",
    default="default",
    show_default=True,
    help="Pack name (scorers follow FRAUD_RULES_PACK).",
)
@click.option("--actor", default=lambda: os.environ.get("USER", "fraudctl"),
              help="Who publishes (kept with the pack).")  # fmt: skip
def rules_publish(path: Path, pack: str, actor: str) -> None:
    """Validate a rule pack and publish it on the compacted rules topic: every scorer with
    FRAUD_RULES_SOURCE=topic switches to it between batches."""
    from fraudstream.rules.published import publish  # noqa: PLC0415

    settings = get_settings()
    event = publish(settings, resolve_endpoints(settings).kafka_bootstrap,
                    path.read_text(encoding="utf-8"), pack=pack, actor=actor)  # fmt: skip
    click.echo(f"published rule pack {pack!r} version {event.version!r} on "
               f"{settings.topic_rules} (scorers following it switch between batches)")  # fmt: skip


@cli.command("archive")
@click.option("--compact", is_flag=True,
              help="Instead: merge small committed files (FRAUD_ARCHIVE_COMPACT_*) and exit. "
                   "Archivers may run meanwhile; one compaction at a time.")  # fmt: skip
def archive_command(compact: bool) -> None:
    """Run the archiver: every topic into Parquet under FRAUD_ARCHIVE_URL (SIGTERM stops it
    after a final flush)."""
    from fraudstream.history import archiver  # noqa: PLC0415

    logging.getLogger().setLevel(logging.INFO)
    if compact:
        merged = archiver.compact(say=click.echo)
        click.echo(f"compaction done: {merged} file(s) merged away")
        return
    archiver.serve()


cli.add_command(train_command)
cli.add_command(trainer_command)
cli.add_command(retrain_command)
cli.add_command(evaluate_command)
cli.add_command(state_group)
cli.add_command(review_group)
cli.add_command(backtest_command)
rules_group.add_command(rules_backtest_command)


# Top-level packages of the `train` extra (pyproject.toml), by import name.
TRAIN_EXTRA_MODULES = frozenset({"sklearn", "skl2onnx", "onnxmltools", "onnx", "pandas",
                                 "matplotlib"})  # fmt: skip


def main() -> None:
    """Console-script entry point: clear one-line errors instead of tracebacks."""
    try:
        cli(standalone_mode=True)
    except FraudStreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in TRAIN_EXTRA_MODULES:
            raise
        click.echo(f"error: this command trains models and needs the train extra ({exc.name} "
                   "is not installed): pip install 'fraudstream[train]', or run it in the "
                   "trainer image (docker build --target trainer)", err=True)  # fmt: skip
        sys.exit(1)
