"""`fraudctl trainer` (the service) and `fraudctl retrain` (a trigger by hand, or one job
in this process with `--now`)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import click

from fraudstream import kafka_clients
from fraudstream.contracts import RetrainTrigger, encode
from fraudstream.errors import FraudStreamError
from fraudstream.localstack.stack import resolve_endpoints
from fraudstream.retrain.settings import TrainerSettings


@click.command("trainer")
def trainer_command() -> None:
    """Run the trainer service: retrain on fraud.retrain triggers, apply the promotion
    policy (settings from the environment, FRAUD_TRAINER_*; SIGTERM stops it)."""
    from fraudstream.retrain.service import main  # noqa: PLC0415 - loads the training stack

    main()


@click.command("retrain")
@click.option("--now", "in_process", is_flag=True,
              help="Train here and now instead of asking the trainer service.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="With --now: print the result as JSON.")
def retrain_command(in_process: bool, as_json: bool) -> None:
    """Ask for a challenger: a manual trigger on fraud.retrain (the trainer service picks
    it up), or with --now one retrain in this process, printing its progress."""
    settings = TrainerSettings()
    try:
        if in_process:
            _run_now(settings, as_json)
        else:
            _send_trigger(settings)
    except FraudStreamError as exc:
        raise click.ClickException(str(exc)) from exc


MANUAL = "manual"  # the detector of a trigger by hand


def manual_trigger(model_name: str, at: datetime | None = None) -> RetrainTrigger:
    """The trigger `fraudctl retrain` sends (detector `manual`)."""
    at = at or datetime.now(UTC)
    return RetrainTrigger(
        trigger_id=f"manual-{uuid.uuid4().hex[:16]}", model_name=model_name,
        detector=MANUAL, statistic=MANUAL, value=0.0, threshold=0.0,
        window_start=at, window_end=at, triggered_at=at,
    )  # fmt: skip


def _send_trigger(settings: TrainerSettings) -> None:
    trigger = manual_trigger(settings.model_name)
    endpoints = resolve_endpoints(settings)
    producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap)
    producer.produce(settings.topic_retrain, encode(trigger), key=settings.model_name.encode())
    if producer.flush(10) != 0:
        raise click.ClickException(f"could not send to {settings.topic_retrain} within 10 s")
    click.echo(f"sent {trigger.trigger_id} to {settings.topic_retrain}: the trainer service "
               "(`fraudctl trainer`, started by `make run`) picks it up")  # fmt: skip


def _run_now(settings: TrainerSettings, as_json: bool) -> None:
    from fraudstream.history.backtest_cli import local_root  # noqa: PLC0415
    from fraudstream.history.query import Archive, TopicNames  # noqa: PLC0415
    from fraudstream.registry import Registry  # noqa: PLC0415
    from fraudstream.retrain.job import as_dict, retrain  # noqa: PLC0415 - training stack

    logging.getLogger("fraudstream").setLevel(logging.INFO)
    trigger = manual_trigger(settings.model_name)
    with Archive(local_root(settings.archive_url), TopicNames.from_settings(settings)) as archive:
        result = retrain(settings, archive, Registry(settings.registry_dir),
                         triggers=[trigger.trigger_id],
                         progress=lambda text: click.echo(text, err=as_json))  # fmt: skip
    if as_json:
        click.echo(json.dumps(as_dict(result), indent=2, default=str))
    elif result.outcome == "registered":
        click.echo(f"registered {settings.model_name} {result.version} (candidate): "
                   f"`fraudctl models show {settings.model_name} {result.version}`")  # fmt: skip
    else:
        raise click.ClickException(f"nothing registered: {result.reason}")
