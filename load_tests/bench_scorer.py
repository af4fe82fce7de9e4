"""End-to-end scorer benchmark on a real broker and Redis, against an exactly-once
consume->produce passthrough measured in the same run (see /work/shared/BENCHMARKS.md).

1. Open loop at fixed rates: event i is sent at start + i/rate (payloads pre-encoded, no
   waiting for acks); a read_committed reader (poll()) stamps each decision's arrival;
   latency = arrival - scheduled send time (same monotonic clock). The first --warmup
   seconds are dropped. Systems: scorer (ML champion), scorer rules-only (empty
   registry), passthrough; and, as what-if variants, scorer and passthrough whose Kafka
   clients get `tuned_clients()` (--no-tuned skips them). A passthrough run first warms
   the broker's JIT (--broker-warmup, not reported).
2. Maximum throughput: preload --max-records, start the service, time its committed
   offsets from the first to the last commit.
CPU seconds per process (service, broker, redis-server, this load generator, and the rest
of the machine) come from /proc over the measured window. Only 127.0.0.1 is targeted.
The passthrough and the what-if scorer run as children of this script (hidden flags).

    python load_tests/bench_scorer.py [--rates 2000,5000] [--duration 20] [--warmup 5]
        [--max-records 200000] [--skip-max] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import numpy as np
import orjson
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bench_support import (
    OVERRIDES_ENV,
    DecisionReader,
    Deployment,
    Load,
    Passthrough,
    Pids,
    Probe,
    Service,
    Snapshot,
    commit_watcher,
    committed_total,
    decision_reader,
    deploy,
    difference,
    infrastructure,
    produce,
    scorer_with_overrides,
    send_open_loop,
    service_argv,
)
from fraudstream import kafka_clients
from fraudstream.contracts import encode
from fraudstream.features.spec import FeatureConfig
from fraudstream.localstack.stack import Endpoints
from fraudstream.model.train_config import TrainConfig
from fraudstream.registry import Registry
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.settings import CommonSettings
from fraudstream.simulator import TRUTH_COLUMNS, SimulationConfig, iter_transactions, simulate
from fraudstream.trainer import simulated_history, train_and_register

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 120.0
STAGES = ("validate", "state", "features", "rules", "model", "decide", "save", "produce", "commit")
CPU_COLUMNS = ("service", "broker", "redis", "loadgen", "others")


@dataclass(frozen=True)
class System:
    name: str
    tag: str
    rules_only: bool = False
    passthrough: bool = False
    tuned: bool = False  # what-if: the clients get TUNED (see tuned_clients)
    delivery: str = "exactly_once"  # FRAUD_SCORER_DELIVERY


SCORER = System("scorer (ML)", "ml")
RULES_ONLY = System("scorer (rules-only)", "rules", rules_only=True)
PASSTHROUGH = System("passthrough (EOS)", "pass", passthrough=True)
ALO = "at_least_once"
SCORER_ALO = System("scorer (ML), at least once", "mla", delivery=ALO)
RULES_ONLY_ALO = System("scorer (rules-only), at least once", "rulesa", rules_only=True,
                        delivery=ALO)  # fmt: skip
PASSTHROUGH_ALO = System("passthrough (at least once)", "passa", passthrough=True, delivery=ALO)
SCORER_TUNED = System("scorer (ML), tuned clients [what-if]", "mlt", tuned=True)
PASSTHROUGH_TUNED = System(
    "passthrough (EOS), tuned clients", "passt", passthrough=True, tuned=True
)


def systems(args: argparse.Namespace) -> tuple[list[System], list[System]]:
    """(open-loop systems, max-throughput systems): exactly once, then at least once
    unless --no-alo, and the what-if variants unless --no-tuned."""
    open_loop = [SCORER, RULES_ONLY, PASSTHROUGH]
    most = [SCORER, PASSTHROUGH]
    if not args.no_alo:
        open_loop += [SCORER_ALO, RULES_ONLY_ALO, PASSTHROUGH_ALO]
        most += [SCORER_ALO]
    if not args.no_tuned:
        open_loop += [SCORER_TUNED, PASSTHROUGH_TUNED]
        most += [SCORER_TUNED, PASSTHROUGH_TUNED]
    return open_loop, most


def tuned_clients(args: argparse.Namespace) -> dict[str, dict[str, int]]:
    """librdkafka settings of the what-if variants (the service's own consumer settings are
    `consumer_tuning`): retry.backoff.ms of the producer, fetch wait and minimum bytes."""
    backoff = args.tuned_backoff_ms
    return {
        "producer": {"retry.backoff.ms": backoff, "retry.backoff.max.ms": max(backoff, 10)},
        "consumer": {"fetch.wait.max.ms": args.tuned_fetch_wait_ms,
                     "fetch.min.bytes": args.tuned_fetch_min_bytes},
    }  # fmt: skip


@dataclass
class Row:
    system: str
    mode: str
    rate: str
    achieved: float
    decided: int
    sent: int
    usage: Snapshot  # differences over the measured window: CPU s, wall, scorer stages
    latency_ms: list[float] = field(default_factory=list)  # p50, p95, p99, max
    notes: str = ""


@dataclass
class Bench:
    args: argparse.Namespace
    endpoints: Endpoints
    admin: AdminClient
    pids: Pids
    load: Load
    registries: dict[bool, Path]  # rules_only -> registry dir
    workdir: Path
    deployed: list[Deployment] = field(default_factory=list)

    def deploy(self, system: System, tag: str) -> Deployment:
        registry = self.registries[system.rules_only]
        dep = deploy(self.endpoints, self.admin, tag, registry, self.args.batch_wait_ms)
        if system.tuned:
            dep.env[OVERRIDES_ENV] = orjson.dumps(tuned_clients(self.args)).decode()
        dep.env["FRAUD_SCORER_DELIVERY"] = system.delivery
        self.deployed.append(dep)
        return dep

    def forget(self) -> None:
        """Delete the topics and Redis keys of every deployment (best effort)."""
        topics = [t for d in self.deployed for t in d.topics()]
        for future in self.admin.delete_topics(topics, request_timeout=30).values():
            with suppress(KafkaException):
                future.result()
        client = redis.Redis.from_url(self.endpoints.redis_url, socket_timeout=5)
        for dep in self.deployed:
            for key in client.scan_iter(f"{dep.settings.redis_prefix}:*", count=1000):
                client.unlink(key)

    @contextmanager
    def running(self, system: System, dep: Deployment) -> Iterator[Probe]:
        """Start the service, await its partition assignment, stop it (SIGTERM) at the end."""
        log = self.workdir / f"{dep.settings.scorer_group_id}.log"
        service = Service(service_argv(system.passthrough, system.tuned), dep.env, log)
        try:
            service.start()
            url = None
            if not system.passthrough:
                line = service.await_line("metrics and health on ", READY_TIMEOUT_S)
                url = line.rsplit("on ", 1)[1].strip() + "/metrics"
            service.await_line("assigned [(", READY_TIMEOUT_S)
            pid = service.proc.pid if service.proc else None
            yield Probe({"service": pid, **self.pids, "loadgen": os.getpid()}, url)
        finally:
            code = service.stop()
            if code not in {0, None}:
                print(f"  {system.name} exited with {code}:\n{service.tail()}")


@dataclass(frozen=True)
class Schedule:
    """An open-loop run: `rate` tx/s for `duration` s, the first `warmup` s not measured."""

    rate: int
    duration: int
    warmup: int

    @property
    def count(self) -> int:
        return self.rate * self.duration


def open_loop(bench: Bench, system: System, plan: Schedule) -> Row:
    dep = bench.deploy(system, f"{system.tag}{plan.rate}")
    settings = dep.settings
    marks: list[Snapshot] = []
    with bench.running(system, dep) as probe, decision_reader(settings) as reader:
        time.sleep(1.0)  # the reader's fetch is established before the clock starts
        producer = kafka_clients.producer(
            settings, bench.endpoints.kafka_bootstrap, {"linger.ms": 1}
        )
        start = time.monotonic() + 0.2
        lags = send_open_loop(
            producer, settings.topic_transactions, bench.load, count=plan.count, rate=plan.rate,
            start=start, at_warm=(start + plan.warmup, lambda: marks.append(probe.snapshot())),
        )  # fmt: skip
        time.sleep(max(0.0, start + plan.duration - time.monotonic()))
        marks.append(probe.snapshot())
        unflushed = producer.flush(30)
        reader.wait_for(plan.count, timeout_s=bench.args.drain_timeout)
    usage = difference(marks[1], marks[0])
    row = open_loop_row(bench.load.ids[: plan.count], system, plan, reader, start, usage)
    lag = np.percentile(np.array(lags) * 1000, [99, 100]) if lags else [math.nan] * 2
    row.notes += f"; send lag p99 {lag[0]:.1f} ms, max {lag[1]:.1f} ms"
    row.notes += f"; unflushed {unflushed}" if unflushed else ""
    return row


def open_loop_row(  # noqa: PLR0917 - one call site, all positional
    ids: list[str], system: System, plan: Schedule, reader: DecisionReader, start: float,
    usage: Snapshot,
) -> Row:  # fmt: skip
    scheduled = start + np.arange(plan.count) / plan.rate
    arrived = np.array([reader.arrivals.get(i, math.nan) for i in ids], dtype=np.float64)
    first = math.ceil(plan.warmup * plan.rate)
    latency = (arrived - scheduled)[first:] * 1000
    latency = latency[np.isfinite(latency)]
    window = (start + plan.warmup, start + plan.duration)
    in_window = np.count_nonzero((arrived >= window[0]) & (arrived <= window[1]))
    stats = [*np.percentile(latency, [50, 95, 99]), latency.max()] if latency.size else []
    notes = f"{first:,} first sent dropped as warm-up, {latency.size:,} measured"
    reported = [reader.reported_ms[i] for i in ids[first:] if i in reader.reported_ms]
    if reported:
        inside = np.percentile(reported, [50, 99])
        notes += f"; scorer's own latency_ms p50 {inside[0]:.1f}, p99 {inside[1]:.1f}"
    decided = int(np.count_nonzero(np.isfinite(arrived)))
    notes += f"; MISSING {plan.count - decided} decisions" if decided < plan.count else ""
    notes += f"; {reader.duplicates} duplicate decisions" if reader.duplicates else ""
    notes += f"; reader errors {reader.errors[:3]}" if reader.errors else ""
    return Row(
        system.name, "open loop", f"{plan.rate:,}", in_window / (window[1] - window[0]),
        decided, plan.count, usage, [float(x) for x in stats], notes,
    )  # fmt: skip


def preload(bench: Bench, dep: Deployment, count: int) -> None:
    producer = kafka_clients.producer(
        dep.settings, bench.endpoints.kafka_bootstrap, {"linger.ms": 20, "batch.size": 1 << 20}
    )
    started = time.monotonic()
    load, topic = bench.load, dep.settings.topic_transactions
    for index in range(count):
        produce(producer, topic, load.payloads[index], load.keys[index])
        if index % 1000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        raise TimeoutError("preload did not finish in 120 s")
    print(f"  preloaded {count:,} in {time.monotonic() - started:.1f} s")


def watch_commits(
    settings: ScorerSettings, total: int, probe: Probe, timeout_s: float
) -> tuple[int, Snapshot, Snapshot]:
    """(records committed at the first observed commit, snapshot then, snapshot at the last)."""
    watcher, partitions = commit_watcher(settings)
    deadline, first = time.monotonic() + timeout_s, None
    try:
        while time.monotonic() < deadline:
            done = committed_total(watcher, partitions)
            if done > 0 and first is None:
                first = (done, probe.snapshot())
            if done >= total and first is not None:
                if first[0] >= total:
                    raise RuntimeError("all committed before the first look: raise --max-records")
                return first[0], first[1], probe.snapshot()
            time.sleep(0.05)
    finally:
        watcher.close()
    raise TimeoutError(f"committed offsets did not reach {total} in {timeout_s:.0f} s")


def max_throughput(bench: Bench, system: System) -> Row:
    total = bench.args.max_records
    dep = bench.deploy(system, f"{system.tag}max")
    preload(bench, dep, total)
    timeout = max(120.0, total / 500)
    with bench.running(system, dep) as probe:
        at_first, first, last = watch_commits(dep.settings, total, probe, timeout)
        with decision_reader(dep.settings) as reader:  # after the window: counts only
            reader.wait_for(total, timeout_s=bench.args.drain_timeout)
    usage = difference(last, first)
    notes = f"timed {total - at_first:,} records from first to last commit"
    notes += f"; {reader.duplicates} duplicate decisions" if reader.duplicates else ""
    return Row(
        system.name, "max throughput", f"preload {total:,}",
        (total - at_first) / usage["wall"], len(reader.arrivals), total, usage, notes=notes,
    )  # fmt: skip


def simulate_load(count: int, seed: int) -> Load:
    config = SimulationConfig(seed=seed, n_transactions=count, days=max(2.0, count / 20_000))
    table = simulate(config).transactions.drop_columns(list(TRUTH_COLUMNS))
    txs = list(iter_transactions(table))
    return Load([encode(tx) for tx in txs], [tx.card_token.encode() for tx in txs],
                [tx.transaction_id for tx in txs])  # fmt: skip


def train(registry_dir: Path, count: int) -> None:
    history = simulated_history(SimulationConfig(seed=11, n_transactions=count, days=20))
    outcome = train_and_register(
        history, features=FeatureConfig.from_yaml(REPO / "config" / "features.yaml"),
        config=TrainConfig(seed=1), registry=Registry(registry_dir), name="fraud",
    )  # fmt: skip
    print(f"  trained {outcome.version.version} on {count:,} simulated transactions")


def prepare(args: argparse.Namespace, endpoints: Endpoints, pids: Pids, workdir: Path) -> Bench:
    os.environ.setdefault("FRAUD_GIT_COMMIT", "bench")
    needed = max(max(args.rates) * args.duration, 0 if args.skip_max else args.max_records)
    started = time.monotonic()
    load = simulate_load(needed, seed=args.seed)
    print(f"  simulated and encoded {needed:,} transactions in {time.monotonic() - started:.0f} s")
    registries = {False: workdir / "registry", True: workdir / "empty-registry"}
    registries[True].mkdir()
    train(registries[False], args.train_transactions)
    admin = kafka_clients.admin_client(CommonSettings(), endpoints.kafka_bootstrap)
    return Bench(args, endpoints, admin, pids, load, registries, workdir)


def run_all(bench: Bench) -> list[Row]:
    args = bench.args
    plan: list[tuple[str, Callable[[], Row]]] = []
    if args.broker_warmup > 0:  # JIT-compile the broker's paths before anything is measured
        # no longer than a measured run: the simulated load is sized for those
        warm = Schedule(max(args.rates), min(args.broker_warmup, args.duration), 0)
        plan.append(("broker warm-up (not reported)", _bind(open_loop, bench, PASSTHROUGH, warm)))
    open_systems, max_systems = systems(args)
    for rate in args.rates:
        for system in open_systems:
            run = Schedule(rate, args.duration, args.warmup)
            plan.append((f"{system.name} at {rate}/s", _bind(open_loop, bench, system, run)))
    if not args.skip_max:
        for system in max_systems:
            plan.append((f"{system.name} max", _bind(max_throughput, bench, system)))
    rows = []
    for name, step in plan:
        print(f"- {name}", flush=True)
        try:
            row = step()
        except Exception as exc:  # a failed phase is reported; the others still run
            print(f"  FAILED: {type(exc).__name__}: {exc}")
            continue
        print(f"  {format_row(row)}", flush=True)
        if not name.startswith("broker warm-up"):
            rows.append(row)
    return rows


def _bind(fn: Callable[..., Row], *args: object) -> Callable[[], Row]:
    return lambda: fn(*args)


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:,.{digits}f}"


def format_row(row: Row) -> str:
    lat = [_num(x) for x in row.latency_ms] if row.latency_ms else ["-"] * 4
    cpu = [_num(row.usage.get(k, math.nan)) for k in CPU_COLUMNS]
    cells = [row.system, row.mode, row.rate, _num(row.achieved, 0), *lat,
             f"{row.decided:,} / {row.sent:,}", *cpu]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def format_costs(row: Row) -> str:
    """CPU µs per transaction in the window, mean batch and the scorer's stage µs/tx."""
    done = row.achieved * row.usage["wall"]
    per_tx = [_num(row.usage.get(k, math.nan) / done * 1e6, 0) for k in ("service", "broker")]
    batches = row.usage.get("fraud_batch_size_count", math.nan)
    records = row.usage.get("fraud_batch_size_sum", math.nan)
    stages = [_num(row.usage.get(f"stage:{s}", math.nan) / records * 1e6) for s in STAGES]
    cells = [row.system, row.mode, row.rate, _num(row.usage["wall"]), *per_tx,
             _num(records / batches), *stages, row.notes]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def print_report(rows: list[Row], args: argparse.Namespace, started: float) -> None:
    print(f"\n## Results (command: `python {shlex.join(sys.argv)}`)\n")
    print(f"{os.cpu_count()} CPUs, load average now {os.getloadavg()[0]:.2f}; "
          f"{time.monotonic() - started:.0f} s total; batch wait {args.batch_wait_ms} ms; "
          f"warm-up {args.warmup} s of {args.duration} s dropped per open-loop run\n")  # fmt: skip
    print(
        "| system | mode | rate | achieved tx/s | p50 ms | p95 ms | p99 ms | max ms "
        "| decided / sent | service CPU s | broker CPU s | redis CPU s | loadgen CPU s "
        "| other processes CPU s |"
    )
    print("|---" * 14 + "|")
    for row in rows:
        print(format_row(row))
    print(
        "\nservice = the scorer or the passthrough process; other processes = the machine's "
        "busy CPU (/proc/stat) minus the four before it (other sessions' work on this shared "
        "machine). tuned clients = librdkafka settings forced onto the service's clients: "
        f"{tuned_clients(args)}; [what-if]: the unmodified scorer code, but the scorer as "
        "deployed cannot set them."
    )
    print(
        "\nCosts over the same windows (stages: wall time from the scorer's /metrics, "
        "µs per transaction):\n"
    )
    print("| system | mode | rate | window s | service CPU µs/tx | broker CPU µs/tx | mean batch | "
          + " | ".join(STAGES) + " | notes |")  # fmt: skip
    print("|---" * (8 + len(STAGES)) + "|")
    for row in rows:
        print(format_costs(row))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add = parser.add_argument
    add("--rates", default="2000,5000", help="open-loop rates, tx/s, comma-separated")
    add("--duration", type=int, default=20, help="seconds per open-loop run")
    add("--warmup", type=int, default=5, help="first seconds of each run not measured")
    add("--max-records", type=int, default=200_000, help="preload of the max-throughput run")
    add("--skip-max", action="store_true", help="no max-throughput runs")
    add("--quick", action="store_true", help="smoke test: rates 500, duration 5, 20,000 max")
    wait_default = ScorerSettings.model_fields["scorer_batch_wait_ms"].default
    add(
        "--batch-wait-ms", type=int, default=wait_default,
        help="FRAUD_SCORER_BATCH_WAIT_MS of scorer and passthrough (the scorer's default)",
    )  # fmt: skip
    add("--broker-warmup", type=int, default=30, help="unreported passthrough run first, s")
    add("--train-transactions", type=int, default=60_000)
    add("--drain-timeout", type=float, default=120.0, help="wait for late decisions, s")
    add("--budget", type=int, default=3600, help="hard limit of the whole run, s")
    add("--seed", type=int, default=5)
    add("--no-tuned", action="store_true", help="skip the tuned-clients what-if variants")
    add("--no-alo", action="store_true", help="skip the at-least-once delivery runs")
    add("--tuned-fetch-min-bytes", type=int, default=1, help="fetch.min.bytes when tuned")
    add("--tuned-backoff-ms", type=int, default=5, help="retry.backoff.ms when tuned")
    add("--tuned-fetch-wait-ms", type=int, default=100, help="fetch.wait.max.ms when tuned")
    add("--passthrough-worker", action="store_true", help=argparse.SUPPRESS)
    add("--scorer-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.rates, args.duration, args.max_records = "500", 5, 20_000
        args.warmup, args.broker_warmup = min(args.warmup, 2), min(args.broker_warmup, 3)
    args.rates = [int(r) for r in str(args.rates).split(",")]
    if not 0 <= args.warmup < args.duration:
        parser.error("--warmup must be shorter than --duration")
    return args


def _out_of_time(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit("time budget exhausted: stopping everything")


def main() -> None:
    args = parse_args()
    if args.passthrough_worker:
        Passthrough().run()
        return
    if args.scorer_worker:
        scorer_with_overrides()
        return
    started = time.monotonic()
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(args.budget)
    rows: list[Row] = []
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-scorer-") as tmp,
            infrastructure(Path(tmp)) as (endpoints, pids),
        ):
            bench = prepare(args, endpoints, pids, Path(tmp))
            try:
                rows = run_all(bench)
            finally:
                if pids["broker"] is None:  # shared infrastructure: remove what we made
                    bench.forget()
    finally:
        signal.alarm(0)
        print_report(rows, args, started)


if __name__ == "__main__":
    main()
