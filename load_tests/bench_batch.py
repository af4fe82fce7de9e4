"""Where a batch's time goes: the scorer's `BatchScorer.process` in-process, no Kafka.

Real redis-server (started here on a free 127.0.0.1 port), a model trained here on
simulated history, the default rule pack, simulated transactions pre-encoded as the
producer would send them and spread over --partitions input partitions by card (CRC32 of
the key, standing in for Kafka's partitioner). Every partition starts a fresh epoch
(`state.reset(p, 0)`) and each batch is scored on the full path with the checkpoints the
scorer would hand it (chained from the previous batch's moves), then saved. Prints
microseconds per event for each stage, averaged over --batches batches of --batch-size
after --warmup batches, the mean `MEMORY USAGE` per key kind and Redis bytes per active
card; --profile adds a cProfile top list. This is the profiling companion of
bench_scorer.py (which measures end to end).

    python load_tests/bench_batch.py [--batch-size 500] [--batches 60] [--partitions 6]
        [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import redis

from bench_scorer import REPO, STAGES, simulate_load, train
from bench_support import Load
from fraudstream.localstack import redis_server
from fraudstream.localstack.processes import free_port, stop, wait_until
from fraudstream.registry import Registry
from fraudstream.rules.engine import RuleSource
from fraudstream.rules.lists import RedisLists
from fraudstream.scoring.core import BatchResult, BatchScorer, InputRecord
from fraudstream.scoring.models import load_model_set
from fraudstream.scoring.service import tune_gc
from fraudstream.scoring.state import Checkpoint, ScorerState, redis_client

PREFIX = "bench:fs"
TOPIC = "transactions"


@dataclass(frozen=True)
class KeyKind:
    """Keys of one kind (card, merchant, device, ip, ckpt): how many, and the mean
    `MEMORY USAGE` and hash field count (one field per input partition) of a sample."""

    keys: int
    mean_bytes: float
    mean_fields: float


def key_memory(client: redis.Redis, prefix: str, sample: int = 500) -> dict[str, KeyKind]:
    """Per key kind under `prefix`: entity hashes `<prefix>:<entity>:<id>` and the
    checkpoints `<prefix>:ckpt:<topic>:<partition>`."""
    found: dict[str, list[str]] = defaultdict(list)
    for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode()
        found[key.removeprefix(f"{prefix}:").split(":", 1)[0]].append(key)
    report = {}
    for kind, keys in sorted(found.items()):
        picked = keys[:sample]
        pipe = client.pipeline(transaction=False)
        for key in picked:
            pipe.memory_usage(key, samples=0)
            pipe.hlen(key)
        replies = cast(list[int], pipe.execute())
        sizes, fields = replies[0::2], replies[1::2]
        report[kind] = KeyKind(len(keys), sum(sizes) / len(sizes), sum(fields) / len(fields))
    return report


def used_memory(client: redis.Redis) -> int:
    return int(cast(dict[str, int], client.info("memory"))["used_memory"])


@dataclass
class Measured:
    """What one run of the batches measured."""

    events: int
    wall_s: float
    stages: dict[str, float]
    redis_stats: dict[str, dict[str, float]]
    memory: dict[str, KeyKind]
    cards: int  # distinct cards in all batches (warm-up included)
    memory_delta: int  # used_memory after all batches less before the first


def build_scorer(client: redis.Redis, registry_dir: Path, partitions: int) -> BatchScorer:
    rules = RuleSource(REPO / "config" / "rules.yaml")
    models = load_model_set(Registry(registry_dir), "fraud")
    return BatchScorer(
        rules=lambda: rules.pack, models=lambda: models,
        state=ScorerState(client, prefix=PREFIX, topic=TOPIC, partitions=partitions),
        lists=RedisLists(client, prefix="bench:list"),
    )  # fmt: skip


def make_batches(load: Load, batch_size: int, partitions: int) -> list[list[InputRecord]]:
    """Records in event order, each on its card's partition with that partition's next
    offset (CRC32 of the key: same card, same partition, as with Kafka's partitioner)."""
    offsets = [0] * partitions
    now_ms = int(time.time() * 1000)
    records = []
    for payload, key in zip(load.payloads, load.keys, strict=True):
        partition = zlib.crc32(key) % partitions
        records.append(InputRecord(TOPIC, partition, offsets[partition], now_ms, key, payload))
        offsets[partition] += 1
    return [records[at : at + batch_size] for at in range(0, len(records), batch_size)]


def score_and_save(
    scorer: BatchScorer, batch: list[InputRecord], synced: dict[int, Checkpoint]
) -> BatchResult:
    """One batch on the full path, saved at once; `synced` moves on as the scorer's
    `StateSync.handed` does (the next save expects `Checkpoint(move.offset, epoch)`)."""
    result = scorer.process(batch, {p: synced[p] for p in {r.partition for r in batch}})
    scorer.save(result)  # the service saves on its commit thread, overlapping the next batch
    if result.pending_save is None or result.degraded or result.lost or result.unsaved:
        raise RuntimeError(f"batch left the full path: degraded={result.degraded} "
                           f"lost={result.lost} unsaved={result.unsaved}")  # fmt: skip
    for partition, move in result.pending_save.moves.items():
        synced[partition] = Checkpoint(move.offset, move.expected.epoch)
    return result


def measure(
    args: argparse.Namespace, client: redis.Redis, scorer: BatchScorer, load: Load
) -> tuple[Measured, cProfile.Profile | None]:
    batches = make_batches(load, args.batch_size, args.partitions)
    before = used_memory(client)
    state = cast(ScorerState, scorer.state)
    synced = {p: state.reset(p, 0) for p in range(args.partitions)}
    for batch in batches[: args.warmup]:
        score_and_save(scorer, batch, synced)
    client.config_resetstat()
    profiler = cProfile.Profile() if args.profile else None
    stages: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches[args.warmup :]:
        result = score_and_save(scorer, batch, synced)
        for stage, seconds in result.stage_seconds.items():
            stages[stage] += seconds
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    redis_stats = cast(dict[str, dict[str, float]], client.info("commandstats"))
    delta = used_memory(client) - before
    measured = Measured(
        args.batch_size * args.batches, wall, stages, redis_stats, key_memory(client, PREFIX),
        len(set(load.keys)), delta,
    )  # fmt: skip
    return measured, profiler


def report(run: Measured, batch_size: int) -> None:
    events = run.events
    print(f"{events:,} events in batches of {batch_size}: {events / run.wall_s:,.0f} events/s, "
          f"{run.wall_s / events * 1e6:.1f} µs/event in process() + save()")  # fmt: skip
    accounted = 0.0
    for stage in (*STAGES, *sorted(set(run.stages) - set(STAGES))):
        if stage in run.stages:
            accounted += run.stages[stage]
            print(f"  {stage:<10} {run.stages[stage] / events * 1e6:7.1f} µs/event")
    print(f"  {'other':<10} {(run.wall_s - accounted) / events * 1e6:7.1f} µs/event (glue)")
    print("redis-server time per event, by command (inside the stages above):")
    for command, stat in sorted(run.redis_stats.items()):
        print(f"  {command.removeprefix('cmdstat_'):<16} {stat['usec'] / events:7.1f} µs/event "
              f"({stat['calls']:,.0f} calls, {stat['usec_per_call']:.0f} µs each)")  # fmt: skip
    report_memory(run)


def report_memory(run: Measured) -> None:
    print("Redis memory per key (MEMORY USAGE, mean of up to 500 sampled keys):")
    entity_bytes = 0.0
    for kind, found in run.memory.items():
        print(f"  {kind:<10} {found.mean_bytes:6.0f} bytes, {found.mean_fields:4.2f} fields "
              f"({found.keys:,} keys)")  # fmt: skip
        if kind != "ckpt":
            entity_bytes += found.keys * found.mean_bytes
    cards = run.cards
    card = run.memory.get("card")
    if card is not None and card.keys != cards:
        print(f"  note: {card.keys:,} card keys for {cards:,} distinct cards sent")
    print(f"Redis bytes per active card ({cards:,} distinct cards):")
    figures = [
        ("used_memory delta / cards", run.memory_delta / cards,
         f" ({run.memory_delta / 1e6:.1f} MB in all)"),
        ("entity keys' MEMORY USAGE / cards", entity_bytes / cards, ""),
    ]  # fmt: skip
    if card is not None:
        figures.append(("the card's own key", card.mean_bytes, ""))
    for label, value, note in figures:
        print(f"  {label:<34} {value:6.0f} bytes{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6, help="input partitions")
    parser.add_argument("--train-transactions", type=int, default=60_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile top 30")
    parser.add_argument(
        "--default-gc", action="store_true", help="keep CPython's collector thresholds"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        pid = redis_server.start(workdir, port)
        try:
            wait_until(lambda: redis_server.ping(port), 10.0)
            train(workdir / "registry", args.train_transactions)
            load = simulate_load(args.batch_size * (args.batches + args.warmup), seed=5)
            client = redis_client(f"redis://127.0.0.1:{port}/0", 200)
            scorer = build_scorer(client, workdir / "registry", args.partitions)
            if not args.default_gc:
                tune_gc()  # as the service does once it has loaded
            run, profiler = measure(args, client, scorer, load)
        finally:
            stop(pid, "redis-server")
    report(run, args.batch_size)
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
