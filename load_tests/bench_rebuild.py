"""How long rebuilding the scorer's feature state from the input log takes, by active cards.

For each --cards count: a fresh 6-partition input topic gets --per-card synthetic
transactions per card (valid `Transaction` JSON keyed by card, event times spread over the
last --days days; built here with orjson: the simulator yields ~8,000 tx/s, far too slow
for a million cards), then every partition starts a new epoch (`state.reset(p, 0)`) and
is caught up to its end with `Replayer.catch_up`, one thread per partition as the
scorer's background jobs run (`--modes sequential` also times one partition after the
other). A catch-up that fails (a Redis timeout, the circuit breaker open) resumes from the
checkpoint Redis holds, as `StateSync` restarts a stopped job, up to --max-restarts times
per partition; the restarts are counted. Reported: wall time, records/s, CPU seconds of
this process (the replay; Kafka client threads included), the broker, redis-server and the
rest of the machine over the replay, Redis memory after it (bytes per card), and what
redis-server's SLOWLOG saw. Sizes after one whose rebuild took more than --max-rebuild-s
are extrapolated, not run. The Redis timeout is the scorer's (FRAUD_REDIS_TIMEOUT_MS)
unless --redis-timeout-ms. With KAFKA_BOOTSTRAP_SERVERS and REDIS_URL set (127.0.0.1
only) those are used, else a private embedded stack; only this run's keys and topics are
removed afterwards.

    python load_tests/bench_rebuild.py [--cards 100000 1000000] [--per-card 2] [--quick]
        [--modes parallel sequential] [--max-rebuild-s 180] [--redis-timeout-ms 250]
        [--chunk 5000] [--max-restarts 200]
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import redis
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench_batch import KeyKind, key_memory, used_memory
from bench_support import Pids, Probe, Snapshot, difference, infrastructure, produce
from fraudstream import kafka_clients
from fraudstream.contracts import decode_transactions
from fraudstream.errors import InfrastructureUnavailable
from fraudstream.features.pipeline import FeaturePipeline
from fraudstream.localstack.stack import Endpoints
from fraudstream.scoring.model import scoring_spec
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.scoring.state import Checkpoint, ScorerState, redis_client
from fraudstream.scoring.sync import CatchUpFailed, Fold, Progress, Replayer

PARTITIONS = 6
CARDS_PER_MERCHANT = 50
CARDS_PER_IP = 4  # IPs are shared (NAT, mobile carriers), so they span partitions
DEVICE_SHARE, IP_SHARE = 0.7, 0.8  # of transactions that carry a device id / an IP
COUNTRIES = ("DE", "FR", "IT", "ES", "NL", "GB", "US")
CHANNELS = ("pos", "ecommerce", "pos", "ecommerce", "atm", "recurring")


def transactions(
    cards: int, per_card: int, days: float, seed: int
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) per transaction: `per_card` rounds over all cards, event times rising
    over the last `days` days, merchants, devices and IPs drawn per round."""
    rng = np.random.default_rng(seed)
    total, now = cards * per_card, time.time()
    start, step = now - days * 86400, days * 86400 / total
    merchants, ips = max(cards // CARDS_PER_MERCHANT, 10), max(cards // CARDS_PER_IP, 10)
    for round_ in range(per_card):
        merchant = rng.integers(0, merchants, cards)
        ip = rng.integers(0, ips, cards)
        amount = np.round(rng.lognormal(3.2, 1.0, cards) + 0.5, 2)
        has_device, has_ip = rng.random(cards) < DEVICE_SHARE, rng.random(cards) < IP_SHARE
        country = rng.integers(0, len(COUNTRIES), cards)
        for card in range(cards):
            at = start + (round_ * cards + card) * step
            token = f"card-{card:08d}"
            tx: dict[str, Any] = {
                "schema_version": 1, "transaction_id": f"rb-{round_}-{card:08d}",
                "event_time": datetime.fromtimestamp(at, UTC), "card_token": token,
                "card_bin": "450519", "customer_id": f"cust-{card:08d}",
                "merchant_id": f"merch-{merchant[card]:07d}", "mcc": "5812",
                "amount": float(amount[card]), "currency": "EUR",
                "channel": CHANNELS[card % len(CHANNELS)], "card_present": card % 2 == 0,
                "country": COUNTRIES[country[card]],
                "device_id": f"dev-{card:08d}" if has_device[card] else None,
                "ip": _ip(int(ip[card])) if has_ip[card] else None,
            }  # fmt: skip
            yield token.encode(), orjson.dumps(tx)


def _ip(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def check_valid(cards: int, max_message_bytes: int) -> None:
    """The generator's records pass the scorer's own validation (the first 2,000)."""
    generated = transactions(cards, 1, 1.0, seed=1)
    values = [next(generated)[1] for _ in range(min(cards, 2000))]
    now_ms = int(time.time() * 1000)
    _oks, errs = decode_transactions(values, max_message_bytes,
                                     timestamps_ms=[now_ms] * len(values))  # fmt: skip
    if errs:
        raise SystemExit(f"generated transactions refused: {errs[0][1]}")


@dataclass
class Job:
    """One partition's catch-up from a fresh epoch to the end of its log."""

    partition: int
    checkpoint: Checkpoint
    target: int
    at: int = 0
    seconds: float = 0.0
    restarts: int = 0  # failed attempts resumed from Redis's checkpoint
    first_error: str | None = None
    error: str | None = None  # why it stopped short

    def run(self, replayer: Replayer, state: ScorerState, max_restarts: int) -> None:
        """Catch up; after a failure, resume from the checkpoint Redis holds once the
        circuit breaker lets calls through, as `StateSync` restarts a stopped job with the
        partition's next batch (at most `max_restarts` times)."""
        started, checkpoint = time.monotonic(), self.checkpoint
        try:
            while True:
                try:
                    checkpoint = replayer.catch_up(self.partition, checkpoint, self.target,
                                                   on_progress=self._progress)  # fmt: skip
                    self.at, self.error = checkpoint.offset, None
                    return
                except (CatchUpFailed, InfrastructureUnavailable) as exc:
                    self.error = f"{type(exc).__name__}: {exc}"
                    self.first_error = self.first_error or self.error
                    if self.restarts >= max_restarts:
                        return
                    self.restarts += 1
                    checkpoint = resume_point(state, self.partition, checkpoint.epoch)
                    self.at = checkpoint.offset
        except Exception as exc:  # reported in the table, the other partitions go on
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            replayer.close()
            self.seconds = time.monotonic() - started

    @property
    def complete(self) -> bool:
        return self.error is None and self.at == self.target

    def _progress(self, progress: Progress) -> None:
        self.at = progress.at


def resume_point(
    state: ScorerState, partition: int, epoch: int, wait_s: float = 60.0
) -> Checkpoint:
    """The partition's checkpoint in Redis once it can be read (a save that timed out on
    the client may still have landed, so it can be ahead of the last one seen)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not state.breaker.allow():
            time.sleep(0.05)
            continue
        try:
            found = state.checkpoint(partition)
        except InfrastructureUnavailable:
            continue
        if found is None or found.epoch != epoch:
            raise CatchUpFailed(f"partition {partition}: checkpoint replaced ({found})")
        return found
    raise CatchUpFailed(f"partition {partition}: Redis unreadable for {wait_s:.0f} s")


@dataclass
class Result:
    """One rebuild (or its extrapolation from a smaller one)."""

    cards: int
    records: int
    mode: str
    wall_s: float
    usage: Snapshot = field(default_factory=dict)
    memory_bytes: float = 0.0  # used_memory after, less before
    kinds: dict[str, KeyKind] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    produce_s: float = 0.0
    extrapolated: bool = False
    slow: list[tuple[str, float]] = field(default_factory=list)  # (command, ms) in SLOWLOG
    delayed_fsyncs: int = 0  # AOF writes Redis made without waiting for a slow fsync


@dataclass
class Bench:
    args: argparse.Namespace
    endpoints: Endpoints
    pids: Pids
    settings: ScorerSettings = field(default_factory=ScorerSettings)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def admin(self) -> AdminClient:
        return kafka_clients.admin_client(self.settings, self.endpoints.kafka_bootstrap)

    def redis(self) -> redis.Redis:
        """A patient client for measuring and cleaning up (not the scorer's)."""
        return redis.Redis.from_url(self.endpoints.redis_url, socket_timeout=60)


def preload(bench: Bench, topic: str, cards: int) -> tuple[int, float]:
    """Produce the cards' transactions; returns (records, seconds)."""
    args, started = bench.args, time.monotonic()
    producer = kafka_clients.producer(
        bench.settings, bench.endpoints.kafka_bootstrap,
        {"linger.ms": 50, "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20},
    )  # fmt: skip
    count = 0
    for key, value in transactions(cards, args.per_card, args.days, seed=cards):
        produce(producer, topic, value, key)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(600) != 0:
        raise TimeoutError("preload not acknowledged in 600 s")
    return count, time.monotonic() - started


def log_ends(bench: Bench, topic: str) -> dict[int, int]:
    consumer = kafka_clients.consumer(bench.settings, bench.endpoints.kafka_bootstrap,
                                      f"rebuild-{bench.run_id}-ends")  # fmt: skip
    try:
        return {p: int(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
                for p in range(PARTITIONS)}  # fmt: skip
    finally:
        consumer.close()


def rebuild(bench: Bench, topic: str, ends: dict[int, int], mode: str, cards: int) -> Result:
    """Reset every partition and catch it up to `ends` as the scorer's jobs do: a thread
    and a replay consumer per partition (`parallel`), or one partition after the other
    (`sequential`), all sharing one `ScorerState` and `Fold` like `StateSync`'s jobs."""
    settings, bootstrap = bench.settings, bench.endpoints.kafka_bootstrap
    prefix = f"rb{bench.run_id}{mode[0]}:fs"
    client = redis_client(bench.endpoints.redis_url, bench.args.redis_timeout_ms)
    state = ScorerState(client, prefix=prefix, topic=topic, partitions=PARTITIONS)
    fold = Fold(FeaturePipeline(scoring_spec(None)), settings.max_message_bytes)

    chunk = {"chunk": bench.args.chunk} if bench.args.chunk else {}
    restarts = bench.args.max_restarts

    def replayer() -> Replayer:
        return Replayer(lambda: kafka_clients.consumer(
            settings, bootstrap, f"rebuild-{bench.run_id}-replay",
            {"enable.partition.eof": False, "fetch.min.bytes": 1},
        ), state, fold, **chunk)  # fmt: skip

    patient = bench.redis()
    before, since = used_memory(patient), time.time()
    delayed = _delayed_fsyncs(patient)
    jobs = [Job(p, state.reset(p, 0), ends[p]) for p in range(PARTITIONS)]
    if mode == "parallel":
        threads = [threading.Thread(target=job.run, args=(replayer(), state, restarts))
                   for job in jobs]  # fmt: skip
    else:
        threads = [threading.Thread(target=run_in_turn, args=(jobs, replayer, state, restarts))]
    probe = Probe({"bench": os.getpid(), "broker": bench.pids["broker"],
                   "redis": bench.pids["redis"]})  # fmt: skip
    first = probe.snapshot()
    for thread in threads:
        thread.start()
    await_jobs(threads, jobs, sum(ends.values()))
    usage = difference(probe.snapshot(), first)
    kinds = key_memory(patient, prefix)
    result = Result(cards, sum(ends.values()), mode, usage["wall"], usage,
                    used_memory(patient) - before, kinds, jobs)  # fmt: skip
    result.slow = slow_commands(patient, since)
    result.delayed_fsyncs = _delayed_fsyncs(patient) - delayed
    remove_keys(patient, prefix)
    client.close()
    return result


def run_in_turn(
    jobs: list[Job], replayer: Callable[[], Replayer], state: ScorerState, restarts: int
) -> None:
    for job in jobs:
        job.run(replayer(), state, restarts)


def slow_commands(client: redis.Redis, since: float) -> list[tuple[str, float]]:
    """Commands that redis-server itself took long to execute (its SLOWLOG, default over
    10 ms) since `since`: tells slow scripts apart from waiting (CPU, queue, disk)."""
    entries = cast(list[dict[str, Any]], client.slowlog_get(128))
    return [(bytes(e["command"][:40]).decode(errors="replace").split(" ")[0], e["duration"] / 1000)
            for e in entries if e["start_time"] >= since]  # fmt: skip


def _delayed_fsyncs(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("persistence")).get("aof_delayed_fsync", 0))


def await_jobs(threads: list[threading.Thread], jobs: list[Job], total: int) -> None:
    """Join the threads, printing progress every 10 s."""
    started = time.monotonic()
    for thread in threads:
        while thread.is_alive():
            thread.join(timeout=10)
            if thread.is_alive():
                done = sum(job.at for job in jobs)
                print(f"    {done:,}/{total:,} records folded after "
                      f"{time.monotonic() - started:.0f} s", flush=True)  # fmt: skip


def remove_keys(client: redis.Redis, prefix: str) -> None:
    """Unlink this run's keys (only those under `prefix`)."""
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            client.unlink(*batch)
            batch = []
    if batch:
        client.unlink(*batch)


def bench_size(bench: Bench, cards: int) -> list[Result]:
    """A fresh topic with `cards` cards' transactions, rebuilt once per mode."""
    topic = f"rebuild-{bench.run_id}-{cards}.transactions"
    admin = bench.admin
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    try:
        count, produce_s = preload(bench, topic, cards)
        ends = log_ends(bench, topic)
        if sum(ends.values()) != count:
            raise RuntimeError(f"{sum(ends.values()):,} records in {topic}, {count:,} produced")
        print(f"  {cards:,} cards: produced {count:,} records in {produce_s:.1f} s "
              f"({count / produce_s:,.0f}/s)", flush=True)  # fmt: skip
        results = []
        for mode in bench.args.modes:
            result = rebuild(bench, topic, ends, mode, cards)
            result.produce_s = produce_s
            results.append(result)
            print(f"  {cards:,} cards, {mode}: rebuilt in {result.wall_s:.1f} s", flush=True)
            describe(result)
        return results
    finally:
        admin.delete_topics([topic])[topic].result(timeout=60)


def extrapolate(done: Result, cards: int, records: int) -> Result:
    """Linear in records (the fold is per record) and memory linear in cards."""
    scale = records / done.records
    usage = {k: v * scale for k, v in done.usage.items()}
    memory = done.memory_bytes * cards / done.cards
    return Result(cards, records, done.mode, done.wall_s * scale, usage, memory, done.kinds,
                  extrapolated=True)  # fmt: skip


def describe(result: Result) -> None:
    """Per-partition times and errors, and the keys left in Redis."""
    for job in result.jobs:
        state = "ok" if job.complete else f"FAILED at {job.at:,}: {job.error}"
        if job.restarts:
            state += f", {job.restarts} restarts, first: {job.first_error}"
        print(f"    partition {job.partition}: {job.target:,} records in {job.seconds:.1f} s "
              f"({job.target / max(job.seconds, 1e-9):,.0f}/s) {state}")  # fmt: skip
    if result.slow:
        worst = max(ms for _c, ms in result.slow)
        names = sorted({c for c, _ms in result.slow})
        print(f"    redis SLOWLOG: {len(result.slow)} commands over 10 ms, slowest {worst:.0f} ms "
              f"({', '.join(names)}); AOF writes without waiting for fsync: "
              f"{result.delayed_fsyncs}")  # fmt: skip
    card = result.kinds.get("card")
    if card is None or card.keys != result.cards:
        print(f"    WARNING: {card.keys if card else 0:,} card keys for {result.cards:,} cards")
    for kind, found in result.kinds.items():
        print(f"    {kind:<9} {found.keys:>9,} keys, MEMORY USAGE {found.mean_bytes:5.0f} bytes, "
              f"{found.mean_fields:.2f} fields")  # fmt: skip


COLUMNS = ("cards", "records", "mode", "done", "restarts", "wall s", "records/s", "CPU s bench",
           "broker", "redis", "others", "Redis MB", "B/card", "card key B")  # fmt: skip


def row(result: Result) -> list[str]:
    usage, card = result.usage, result.kinds.get("card")
    mark = "~" if result.extrapolated else ""
    complete = result.extrapolated or all(job.complete for job in result.jobs)
    return [
        f"{result.cards:,}", f"{result.records:,}",
        result.mode + (" (extrapolated)" if result.extrapolated else ""),
        "-" if result.extrapolated else f"{sum(j.complete for j in result.jobs)}/{PARTITIONS}",
        "-" if result.extrapolated else str(sum(j.restarts for j in result.jobs)),
        f"{mark}{result.wall_s:.1f}",
        f"{result.records / result.wall_s:,.0f}" if complete else "failed",
        *(f"{mark}{usage.get(k, math.nan):.1f}" for k in ("bench", "broker", "redis", "others")),
        f"{mark}{result.memory_bytes / 1e6:,.0f}",
        f"{mark}{result.memory_bytes / result.cards:,.0f}",
        f"{card.mean_bytes:.0f}" if card is not None else "-",
    ]  # fmt: skip


def print_table(results: list[Result]) -> None:
    rows = [list(COLUMNS), *(row(r) for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for line in rows:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def run(args: argparse.Namespace, endpoints: Endpoints, pids: Pids) -> list[Result]:
    bench = Bench(args, endpoints, pids)
    check_valid(max(args.cards), bench.settings.max_message_bytes)
    results: list[Result] = []
    too_slow: Result | None = None
    for cards in sorted(args.cards):
        if too_slow is not None:
            records = cards * args.per_card
            results += [
                extrapolate(r, cards, records) for r in results if r.cards == too_slow.cards
            ]
            print(f"  {cards:,} cards: not run ({too_slow.cards:,} took {too_slow.wall_s:.0f} s, "
                  f"over --max-rebuild-s {args.max_rebuild_s:g}): extrapolated")  # fmt: skip
            continue
        done = bench_size(bench, cards)
        results += done
        slowest = max(done, key=lambda r: r.wall_s)
        if slowest.wall_s > args.max_rebuild_s:
            too_slow = slowest
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="10,000 cards only")
    parser.add_argument("--per-card", type=int, default=2, help="transactions per card")
    parser.add_argument("--days", type=float, default=7.0, help="event times span these days")
    parser.add_argument("--modes", nargs="+", choices=("parallel", "sequential"),
                        default=["parallel"])  # fmt: skip
    parser.add_argument("--max-rebuild-s", type=float, default=180.0,
                        help="extrapolate larger sizes once a rebuild took longer")  # fmt: skip
    parser.add_argument("--redis-timeout-ms", type=int,
                        default=ScorerSettings().redis_timeout_ms,
                        help="per-call Redis timeout, ms (the scorer's)")  # fmt: skip
    parser.add_argument("--chunk", type=int, default=None,
                        help="records per load+save (default: the Replayer's)")  # fmt: skip
    parser.add_argument("--max-restarts", type=int, default=200,
                        help="per partition; 0 stops a partition at its first failure")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.cards = [10_000]
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-rebuild-") as tmp,
        infrastructure(Path(tmp)) as (endpoints, pids),
    ):
        results = run(args, endpoints, pids)
    chunk = args.chunk or "the Replayer's default"
    print(f"\nrebuild from the log: {PARTITIONS} partitions, {args.per_card} transactions "
          f"per card, Redis timeout {args.redis_timeout_ms} ms, chunk {chunk}; one thread per "
          f"partition (parallel) as the scorer's background jobs; "
          f"CPU seconds over the rebuild; Redis MB = used_memory after less before "
          f"(B/card = per active card, all entity keys)")  # fmt: skip
    print_table(results)
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
