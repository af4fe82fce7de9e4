"""The trainer's pure parts: the comparison's intervals, the retrain windows, and the
service loop's coalescing and offset commits (fake consumer and producer, a real
registry directory, a job that waits until the test lets it finish)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fraudstream.contracts import ModelEvent, ModelEventType, RetrainTrigger, encode
from fraudstream.history.query import Archive
from fraudstream.registry import Registry
from fraudstream.retrain.cli import manual_trigger
from fraudstream.retrain.job import RetrainResult
from fraudstream.retrain.service import Policy, Trainer
from fraudstream.retrain.settings import TrainerSettings
from fraudstream.retrain.stats import difference, wilson, z_value
from fraudstream.retrain.windows import RetrainWindows
from tests.waiting import await_condition


def test_wilson_interval_matches_newcombes_worked_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263, 95 %.
    low, high = wilson(81, 263, z_value(0.95))
    assert low == pytest.approx(0.2553, abs=5e-5)
    assert high == pytest.approx(0.3662, abs=5e-5)


def test_difference_matches_newcombes_hybrid_score_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II (e), method 10:
    # 56/70 - 48/80 = 0.2000, 95 % interval 0.0524 to 0.3339.
    d = difference(48, 80, 56, 70, 0.95)
    assert d.estimate == pytest.approx(0.2)
    assert d.low == pytest.approx(0.0524, abs=5e-5)
    assert d.high == pytest.approx(0.3339, abs=5e-5)


def test_difference_without_trials_knows_nothing_and_narrows_with_more_data() -> None:
    assert (difference(0, 0, 3, 10, 0.95).low, difference(0, 0, 3, 10, 0.95).high) == (-1, 1)
    few, many = difference(5, 10, 6, 10, 0.95), difference(500, 1000, 600, 1000, 0.95)
    assert few.low < 0 < few.high
    assert many.low > 0
    assert many.high - many.low < few.high - few.low


def test_z_value_rejects_a_confidence_outside_zero_one() -> None:
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        z_value(1.0)


def test_windows_end_where_labels_have_matured() -> None:
    newest = datetime(2026, 3, 1, 12, tzinfo=UTC)
    w = RetrainWindows.plan(newest, newest + timedelta(days=5), train_days=20, eval_days=7,
                            warmup_days=3, mature_days=2)  # fmt: skip
    assert w.eval_end == newest + timedelta(microseconds=1) - timedelta(days=2)
    assert w.eval_start == w.eval_end - timedelta(days=7)
    assert w.train_start == w.eval_start - timedelta(days=20)
    assert w.warmup_start == w.train_start - timedelta(days=3)
    # Labels known as of an earlier time than the newest row: the windows end earlier.
    early = RetrainWindows.plan(newest, newest - timedelta(days=1), train_days=20,
                                eval_days=7, warmup_days=3, mature_days=2)  # fmt: skip
    assert early.eval_end == newest - timedelta(days=3)
    assert "evaluate to 2026-02-26" in early.describe()


def test_windows_need_time_zones() -> None:
    with pytest.raises(ValueError, match="time zone"):
        RetrainWindows.plan(datetime(2026, 3, 1), datetime(2026, 3, 1, tzinfo=UTC),
                            train_days=1, eval_days=1, warmup_days=0, mature_days=0)  # fmt: skip


@dataclass
class _Message:
    payload: bytes
    part: int
    off: int

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self.part

    def offset(self) -> int:
        return self.off

    def value(self) -> bytes:
        return self.payload


@dataclass
class _Consumer:
    commits: list[list[tuple[int, int]]] = field(default_factory=list)

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert not asynchronous
        self.commits.append([(o.partition, o.offset) for o in offsets])


@dataclass
class _Producer:
    sent: list[bytes] = field(default_factory=list)

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append(value)

    def flush(self, timeout: float) -> int:
        return 0

    def __len__(self) -> int:
        return 0


class _HeldJob:
    """A retrain that records its triggers and finishes when released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[list[str]] = []

    def __call__(self, _s: TrainerSettings, _a: Archive, _r: Registry, triggers: list[str],
                 ) -> RetrainResult:  # fmt: skip
        self.calls.append(triggers)
        assert self.release.wait(10)
        return RetrainResult("skipped", reason="no labelled rows")


def _trainer(
    tmp_path: Path, job: _HeldJob, policy: Policy | None = None, producer: _Producer | None = None
) -> tuple[Trainer, _Consumer]:
    settings = TrainerSettings(registry_dir=tmp_path / "models",
                               archive_url=str(tmp_path / "archive"))  # fmt: skip
    consumer, producer = _Consumer(), _Producer() if producer is None else producer
    trainer = Trainer(settings, cast(Consumer, consumer), cast(Producer, producer),
                      run_job=job, policy=policy)  # fmt: skip
    return trainer, consumer


def _message(offset: int, model_name: str = "fraud", value: bytes | None = None) -> Any:
    return _Message(value or encode(manual_trigger(model_name)), 0, offset)


def test_a_trigger_during_a_job_is_coalesced_and_offsets_wait_for_the_job(
    tmp_path: Path,
) -> None:
    job = _HeldJob()
    trainer, consumer = _trainer(tmp_path, job)
    trainer.on_message(_message(4))
    await_condition(lambda: job.calls, 10, what="the job to start")
    trainer.on_message(_message(5))
    trainer.finish_job()
    assert consumer.commits == []  # the job still runs: nothing is committed
    assert trainer.job is not None
    assert len(trainer.job.triggers) == 2
    job.release.set()
    await_condition(lambda: trainer.job is not None and trainer.job.done.is_set(), 10,
                    what="the job to finish")  # fmt: skip
    trainer.finish_job()
    assert trainer.job is None
    assert consumer.commits == [[(0, 6)]]
    assert len(job.calls) == 1
    assert len(job.calls[0]) == 2
    sample = trainer.metrics.registry.get_sample_value
    assert sample("fraud_trainer_triggers_total", {"outcome": "started"}) == 1
    assert sample("fraud_trainer_triggers_total", {"outcome": "coalesced"}) == 1
    assert sample("fraud_trainer_runs_total", {"outcome": "skipped"}) == 1
    assert sample("fraud_trainer_running") == 0


def _drift_trigger(window_end: datetime) -> bytes:
    return encode(RetrainTrigger(
        trigger_id=f"t{window_end:%d%H}", model_name="fraud", detector="feature_psi",
        feature="amount_log", statistic="psi", value=0.6, threshold=0.25,
        window_start=window_end - timedelta(hours=1), window_end=window_end,
        triggered_at=window_end,
    ))  # fmt: skip


def test_a_drift_trigger_waits_for_mature_data_after_its_window(tmp_path: Path) -> None:
    drifted = datetime(2026, 3, 10, tzinfo=UTC)
    job = _HeldJob()
    trainer, consumer = _trainer(tmp_path, job)
    trainer.settings = trainer.settings.model_copy(
        update={"trainer_wait_days": 3.0, "trainer_mature_days": 2.0, "trainer_check_s": 0.001}
    )
    newest = [drifted]  # the archive when the trigger is first checked: ready at day 13
    trainer.newest_archived = lambda: newest[0]  # type: ignore[method-assign]
    trainer.on_message(cast(Any, _Message(_drift_trigger(drifted), 0, 7)))
    trainer.on_message(cast(Any, _Message(_drift_trigger(drifted + timedelta(hours=2)), 0, 8)))
    trainer.on_message(_message(9))  # by hand, but the waiting job takes it in
    trainer.start_when_ready()
    newest[0] = drifted + timedelta(days=4)  # an evaluation would end on day 12: too early
    trainer.settings = trainer.settings.model_copy(update={"trainer_check_s": 0.0})
    trainer.start_when_ready()
    assert trainer.job is None
    assert job.calls == []
    sample = trainer.metrics.registry.get_sample_value
    assert sample("fraud_trainer_waiting") == 1
    assert sample("fraud_trainer_triggers_total", {"outcome": "deferred"}) == 1
    assert sample("fraud_trainer_triggers_total", {"outcome": "coalesced"}) == 2

    newest[0] = drifted + timedelta(days=5)  # 5 - 2 mature: 3 days after what it saw

    def started() -> bool:
        trainer.start_when_ready()
        return bool(job.calls)

    await_condition(started, 5, what="the waiting job to start")
    assert [len(call) for call in job.calls] == [3]
    assert sample("fraud_trainer_waiting") == 0
    assert consumer.commits == []  # committed when the job finishes, not before
    job.release.set()
    await_condition(lambda: trainer.job is not None and trainer.job.done.is_set(), 10,
                    what="the job to finish")  # fmt: skip
    trainer.finish_job()
    assert consumer.commits == [[(0, 10)]]


def test_a_trigger_by_hand_never_waits(tmp_path: Path) -> None:
    job = _HeldJob()
    trainer, _consumer = _trainer(tmp_path, job)
    trainer.settings = trainer.settings.model_copy(update={"trainer_wait_days": 30.0})
    trainer.on_message(_message(0))
    await_condition(lambda: job.calls, 10, what="the job to start")
    assert trainer.waiting is None
    job.release.set()


def test_invalid_and_foreign_triggers_are_counted_and_start_nothing(tmp_path: Path) -> None:
    job = _HeldJob()
    trainer, _consumer = _trainer(tmp_path, job)
    trainer.on_message(_message(0, value=b'{"trigger_id": 1}'))
    trainer.on_message(_message(1, model_name="other"))
    assert trainer.job is None
    assert job.calls == []
    sample = trainer.metrics.registry.get_sample_value
    assert sample("fraud_trainer_triggers_total", {"outcome": "invalid"}) == 1
    assert sample("fraud_trainer_triggers_total", {"outcome": "other_model"}) == 1


def test_the_policy_is_applied_between_jobs_and_its_failures_keep_the_trainer_running(
    tmp_path: Path,
) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    step = ModelEvent(model_name="fraud", version="v1", event=ModelEventType.SHADOW,
                      actor="trainer", at=at)  # fmt: skip
    calls: list[datetime] = []

    def policy(_registry: Registry, _archive: Archive, now: datetime) -> list[ModelEvent]:
        calls.append(now)
        if len(calls) == 2:
            raise OSError("a parquet file vanished mid-read")
        return [step]

    producer, job = _Producer(), _HeldJob()
    trainer, _consumer = _trainer(tmp_path, job, policy, producer)
    trainer.settings = trainer.settings.model_copy(update={"trainer_check_s": 0.001})
    trainer.apply_policy()
    assert producer.sent == [encode(step)]

    def checked_again() -> bool:
        trainer.apply_policy()
        return len(calls) >= 2

    await_condition(checked_again, 5, what="a second check")
    sample = trainer.metrics.registry.get_sample_value
    assert sample("fraud_trainer_policy_errors_total") == 1
    assert sample("fraud_model_events_total", {"event": "shadow"}) == 1
    trainer.on_message(_message(1))  # a job runs: no policy meanwhile
    checked = len(calls)
    trainer.apply_policy()
    assert len(calls) == checked
    job.release.set()
    running = trainer.job
    assert running is not None
    assert running.done.wait(10)
    assert running.thread is not None
    running.thread.join(10)
