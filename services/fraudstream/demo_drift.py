"""`fraudctl demo --drift` (`make run DRIFT=1`): the retraining loop inside the demo.

The replay is a simulated world of `DriftScenario.days` days that ends now, in which card
holders' amounts triple and their share of online payments doubles from `drift_day` on.
The drift monitor starts once `monitor_day` days have warmed the scorer's state up (the
features that count a card's history are not stationary after a cold start: a fresh
stack drifts on `card_count_1d` within a minute). Each step of the loop is printed as it
reaches its topic: the monitor's trigger on `fraud.retrain`; then on `fraud.models` the
trainer's challenger with its offline evaluation, and the promotion policy's shadow,
canary, and promotion or retirement with the canary test's numbers. The demo stops a
little after the challenger's fate, or when the world ends.

Time is compressed (a simulated day in 5 s at 1,000 payments/s), so the trainer and the
policy work at demo scale: the windows of `TRAINER_ENV` and `config/promotion-demo.yaml`.
The replay holds while the trainer trains: a retrain takes a minute or two here, which
at this compression would be a fortnight of traffic, where in production it is an hour
against weeks of data.
The monitor runs with the shipped `config/drift.yaml`. The run gets its own archive
(`<state>/drift-demo/archive`, from the topics' ends) and consumer groups, so an earlier
run's history does not enter the trainer's windows.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from fraudstream import kafka_clients
from fraudstream.contracts import ModelEvent, ModelEventType, RetrainTrigger
from fraudstream.errors import ConfigurationError, FraudStreamError
from fraudstream.localstack.processes import free_port
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.simulator import DriftConfig, SimulationConfig

Say = Callable[[str], None]
HISTORY_PER_DAY = 5_000  # simulated payments per day: the density the first model saw
GRACE_S = 15.0  # the demo runs on this long after the challenger's fate, to show serving
# The trainer at demo scale: at 1,000 payments/s a simulated day passes in 5 s.
TRAINER_ENV = {
    "FRAUD_TRAINER_TRAIN_DAYS": "12",  # its newest 20 % validate: 2 labelled frauds at 8
    "FRAUD_TRAINER_EVAL_DAYS": "3",
    "FRAUD_TRAINER_WARMUP_DAYS": "3",
    "FRAUD_TRAINER_MATURE_DAYS": "6",  # most chargebacks take longer: labels stay partial
    "FRAUD_TRAINER_WAIT_DAYS": "4",  # the evaluation and a day of training after the change
    "FRAUD_TRAINER_MIN_FRAUDS": "20",
    "FRAUD_TRAINER_CHECK_S": "2",
    "FRAUD_PROMOTION_CONFIG": "config/promotion-demo.yaml",
}


@dataclass(frozen=True)
class DriftScenario:
    """The world the drift demo replays (days count from its start)."""

    days: float = 46.0
    monitor_day: float = 10.0
    drift_day: float = 14.0
    fraud_rate: float = 0.01  # the simulator's most: the canary's sample fills in days
    amount_multiplier: float = 3.0
    online_share_multiplier: float = 2.0

    @property
    def payments(self) -> int:
        return int(self.days * HISTORY_PER_DAY)

    def world(self, start: datetime, id_prefix: str) -> SimulationConfig:
        """The simulation: seed 7, the customers the demo's first model knows."""
        return SimulationConfig(
            seed=7, n_transactions=self.payments, days=self.days, start=start,
            fraud_rate=self.fraud_rate, id_prefix=id_prefix,
            drift=DriftConfig(at=start + timedelta(days=self.drift_day),
                              amount_multiplier=self.amount_multiplier,
                              online_share_multiplier=self.online_share_multiplier),
        )  # fmt: skip


def check_room(start: datetime, days: float, replayed_until: datetime | None) -> None:
    """Refuse a world that starts before the last payment an earlier demo sent: the same
    cards' state in Redis is at that time, and replaying them earlier makes nonsense of
    their features (see `demo.replay_window`)."""
    if replayed_until is not None and replayed_until > start:
        raise ConfigurationError(
            f"the drift demo replays {days:g} days from {start:%Y-%m-%d}, "
            f"but an earlier demo already sent payments up to {replayed_until:%Y-%m-%d %H:%M} "
            "for the same cards: `make clean` resets the local stack's state (the model "
            "registry is kept)"
        )


@dataclass
class LoopLog:
    """The loop's records as the demo reads them: printed, and the challenger's fate."""

    say: Say
    registry_dir: Path
    wait_days: float
    when: Callable[[], str] = lambda: ""  # where the replay is, for each line
    challengers: set[str] = field(default_factory=set)
    decided: str | None = None  # "promoted" or "retired", once a challenger's fate is known
    triggers: int = 0

    def on_trigger(self, value: bytes) -> None:
        """A record of `fraud.retrain`."""
        try:
            trigger = RetrainTrigger.model_validate_json(value)
        except ValidationError:
            return
        self.triggers += 1
        feature = f" on {trigger.feature}" if trigger.feature else ""
        self.say(
            f"loop ({self.when()}): drift trigger from {trigger.detector}{feature}: "
            f"{trigger.statistic} {trigger.value:.3g} against {trigger.threshold:g} "
            f"({trigger.model_version}); the trainer waits for {self.wait_days:g} days of "
            "mature data after it"
        )

    def on_model_event(self, value: bytes) -> None:
        """A record of `fraud.models`."""
        try:
            event = ModelEvent.model_validate_json(value)
        except ValidationError:
            return
        self.say(f"loop ({self.when()}): {event.event.value} {event.version} "
                 f"({event.actor}): {event.note}")  # fmt: skip
        if event.event is ModelEventType.REGISTERED:
            self.challengers.add(event.version)
            summary = self._evaluation(event.model_name, event.version)
            if summary:
                self.say(f"loop: evaluation of {event.version}: {summary}")
        elif event.version in self.challengers and event.event in (
            ModelEventType.PROMOTED,
            ModelEventType.RETIRED,
        ):
            self.decided = event.event.value

    def _evaluation(self, name: str, version: str) -> str | None:
        from fraudstream.registry import Registry  # noqa: PLC0415
        from fraudstream.retrain.job import Evaluation  # noqa: PLC0415 - the training side

        try:
            text = Registry(self.registry_dir).evaluation(name, version)
        except FraudStreamError:  # another registry's model: nothing to add
            return None
        return Evaluation.model_validate_json(text).summary() if text else None


def job_failures(log_text: str) -> list[str]:
    """Why retrain jobs ended without a challenger, from lines of the trainer's log."""
    reasons = []
    for line in log_text.splitlines():
        if "retrain skipped: " in line:
            reasons.append(line.split("retrain skipped: ", 1)[1].strip())
        elif "retrain for " in line and " failed: " in line:
            reasons.append(line.split(" failed: ", 1)[1].strip())
    return reasons


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read(1 << 20).decode(errors="replace")
    except OSError:
        return ""


def trainer_state(metrics: str) -> str:
    """`waiting for data`, `training` or `idle`, from the trainer's `/metrics` text."""
    values = {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(metrics)
        if family.name in ("fraud_trainer_waiting", "fraud_trainer_running") and family.samples
    }
    if values.get("fraud_trainer_running"):
        return "training"
    return "waiting for data" if values.get("fraud_trainer_waiting") else "idle"


Child = subprocess.Popen[bytes]


def drift_line(monitor_port: int) -> str:
    """`drift: ...` for the summary: drifted detectors per the monitor, or why not known."""
    from fraudstream.drift.status import fetch, parse  # noqa: PLC0415 - small, demo only

    try:
        rows = parse(fetch(f"http://127.0.0.1:{monitor_port}/metrics", timeout_s=1))
    except FraudStreamError:
        return "drift: monitor starting"
    if not rows:
        return "drift: no ML decision watched yet"
    drifted = [f"{r.detector}{'.' + r.feature if r.feature else ''}" for r in rows if r.drifted]
    versions = sorted({r.model_version for r in rows})
    shown = ", ".join(drifted[:3]) + (f" +{len(drifted) - 3}" if len(drifted) > 3 else "")
    return f"drift ({', '.join(versions)}): " + (shown if drifted else "none")


class DriftDemo:
    """The drift demo's processes and their settings: its archive, consumer groups, the
    monitor started after the warm-up."""

    def __init__(self, settings: ScorerSettings, bootstrap: str, say: Say,
                 scenario: DriftScenario | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.bootstrap = bootstrap
        self.say = say
        self.scenario = scenario or DriftScenario()
        run = uuid.uuid4().hex[:8]
        self.dir = settings.state_dir / "drift-demo"
        self.archive = self.dir / "archive"
        self.groups = {"monitor": f"demo-drift-{run}", "trainer": f"demo-trainer-{run}",
                       "archiver": f"demo-archiver-{run}"}  # fmt: skip
        self.start: datetime | None = None
        self.monitor: Child | None = None
        self.monitor_port, self.trainer_port = free_port(), free_port()
        self.start_monitor: Callable[[dict[str, str]], Child] | None = None  # set by the demo
        self._decided_at: float | None = None
        self._drift = ("drift: monitor not started", 0.0)
        self._trainer = ("trainer starting", 0.0)
        self.hold = threading.Event()  # set while the trainer trains: the replay waits
        self.trainer_log = settings.state_dir / "trainer.log"
        self._log_mark = 0
        self.replayed: datetime | None = None  # the replay's clock, as of the last step
        self.log = LoopLog(say, settings.registry_dir,
                           float(TRAINER_ENV["FRAUD_TRAINER_WAIT_DAYS"]),
                           lambda: self.day(self.replayed))  # fmt: skip

    def world(self, now: datetime, replayed_until: datetime | None) -> SimulationConfig:
        """The scenario's simulation, ending now; refused over an earlier demo's cards."""
        start = now - timedelta(days=self.scenario.days)
        check_room(start, self.scenario.days, replayed_until)
        self.start = start
        self._in_flight()
        s = self.scenario
        self.say(
            f"drift demo: {s.payments:,} payments over {s.days:g} days from {start:%Y-%m-%d}; "
            f"the monitor starts on day {s.monitor_day:g}, amounts x{s.amount_multiplier:g} "
            f"and online share x{s.online_share_multiplier:g} from day {s.drift_day:g}"
        )
        return s.world(start, f"drift{uuid.uuid4().hex[:6]}")

    def _in_flight(self) -> None:
        """Say which versions an earlier run left in shadow or canary: the policy goes on
        judging them, on this run's traffic."""
        from fraudstream.registry import Registry, Stage  # noqa: PLC0415

        try:
            versions = Registry(self.settings.registry_dir).list(self.settings.model_name)
        except FraudStreamError:
            return
        for v in versions:
            if v.stage in (Stage.SHADOW, Stage.CANARY):
                self.say(
                    f"the registry holds {v.version} in {v.stage.value} from an earlier "
                    "run: the promotion policy goes on judging it on this run's traffic"
                )

    def archiver_env(self) -> dict[str, str]:
        """A fresh archive of this run, from the topics' ends."""
        shutil.rmtree(self.archive, ignore_errors=True)
        self.archive.mkdir(parents=True)
        return {"FRAUD_ARCHIVE_URL": str(self.archive), "FRAUD_ARCHIVE_START": "latest",
                "FRAUD_ARCHIVE_GROUP": self.groups["archiver"],
                "FRAUD_ARCHIVE_FLUSH_S": "5"}  # fmt: skip

    def trainer_env(self) -> dict[str, str]:
        """The trainer at demo scale, reading this run's archive and triggers only."""
        kafka_clients.commit_at_end(self.settings, self.bootstrap, self.groups["trainer"],
                                    self.settings.topic_retrain)  # fmt: skip
        return {**TRAINER_ENV, "FRAUD_ARCHIVE_URL": str(self.archive),
                "FRAUD_TRAINER_GROUP_ID": self.groups["trainer"],
                "FRAUD_TRAINER_METRICS_PORT": str(self.trainer_port)}  # fmt: skip

    def monitor_due(self, replayed: datetime | None) -> bool:
        """Whether the replay has passed the warm-up and the monitor is not running yet."""
        if self.monitor is not None or replayed is None or self.start is None:
            return False
        return replayed >= self.start + timedelta(days=self.scenario.monitor_day)

    def monitor_env(self) -> dict[str, str]:
        """The monitor's group, committed at the decisions' end: it watches from now on."""
        kafka_clients.commit_at_end(self.settings, self.bootstrap, self.groups["monitor"],
                                    self.settings.topic_decisions)  # fmt: skip
        return {"FRAUD_DRIFT_GROUP_ID": self.groups["monitor"],
                "FRAUD_DRIFT_METRICS_PORT": str(self.monitor_port)}  # fmt: skip

    def day(self, replayed: datetime | None) -> str:
        """`day 12.3/42` of the replay, for the summary line."""
        if replayed is None or self.start is None:
            return f"day 0/{self.scenario.days:g}"
        elapsed = (replayed - self.start) / timedelta(days=1)
        return f"day {elapsed:.1f}/{self.scenario.days:g}"

    def step(self, replayed: datetime | None, feeding: bool, last_decision: float,
             started: Callable[[Child], None]) -> str | None:  # fmt: skip
        """Start the monitor once the warm-up is over (`started` is told of the process);
        why the demo ends, once it should: a while after the challenger's fate, or once
        the world has been replayed and decided."""
        self.replayed = replayed
        if self.monitor_due(replayed) and self.start_monitor is not None:
            self.say(f"{self.day(replayed)}: the scorer's state is warm; starting the drift "
                     "monitor from the decisions' end")  # fmt: skip
            self.monitor = self.start_monitor(self.monitor_env())
            started(self.monitor)
        now = time.monotonic()
        self._hold_while_training(now)
        if self.log.decided and self._decided_at is None:
            self._decided_at = now
        if self._decided_at is not None and now - self._decided_at > GRACE_S:
            return (f"drift demo: the challenger was {self.log.decided}; `fraudctl models "
                    f"history {self.settings.model_name}` lists every step")  # fmt: skip
        if not feeding and now - last_decision > 10:
            return "drift demo: the simulated world has ended" + (
                "" if self.log.decided else ", before the challenger's fate was decided"
            )
        return None

    def _hold_while_training(self, now: float) -> None:
        """Read the trainer's state every second; hold the replay while it trains."""
        from fraudstream.drift.status import fetch  # noqa: PLC0415 - small, demo only

        if now - self._trainer[1] < 1:
            return
        url = f"http://127.0.0.1:{self.trainer_port}/metrics"
        line = trainer_line(lambda: fetch(url, timeout_s=1))
        self._trainer = (line, now)
        training = line == "trainer training"
        if training and not self.hold.is_set():
            self.hold.set()
            self._log_mark = _size(self.trainer_log)
            self.say(f"loop ({self.day(self.replayed)}): the trainer is training; the replay "
                     "holds until it is done")  # fmt: skip
        elif not training and self.hold.is_set():
            self.hold.clear()
            self.say(f"loop ({self.day(self.replayed)}): the trainer is done; the replay goes on")
            for reason in job_failures(_read_from(self.trainer_log, self._log_mark)):
                self.say(f"loop: no challenger: {reason} (the monitor's debounce holds the "
                         "next trigger for 6 hours)")  # fmt: skip

    def status(self, replayed: datetime | None, models: Counter[str]) -> str:
        """The summary line's drift demo part: drift status (read every 5 s), the replay's
        day, the trainer's state, decisions by model version."""
        drift, at = self._drift
        if self.monitor is not None and time.monotonic() - at >= 5:
            drift = drift_line(self.monitor_port)
            self._drift = (drift, time.monotonic())
        by_model = ", ".join(f"{v} {n}" for v, n in models.most_common(3)) or "-"
        return f"{drift} | {self.day(replayed)} | {self._trainer[0]} | by model: {by_model}"

    def on_record(self, topic: str, value: bytes) -> bool:
        """Print a loop record; False when `topic` is not one of the loop's."""
        if topic == self.settings.topic_retrain:
            self.log.on_trigger(value)
        elif topic == self.settings.topic_models:
            self.log.on_model_event(value)
        else:
            return False
        return True


def trainer_line(fetch: Callable[[], str]) -> str:
    """`trainer: <state>` from its metrics, or `trainer starting` when not reachable."""
    try:
        return f"trainer {trainer_state(fetch())}"
    except (FraudStreamError, ValueError):
        return "trainer starting"
