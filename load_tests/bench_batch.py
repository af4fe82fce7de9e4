"""Where a batch's time goes: the scorer's `BatchScorer.process` in-process, no Kafka.

Real redis-server (started here on a free 127.0.0.1 port), a model trained here on
simulated history, the default rule pack, simulated transactions pre-encoded as the
producer would send them. Prints microseconds per event for each stage, averaged over
--batches batches of --batch-size after --warmup batches; --profile adds a cProfile top
list. This is the profiling companion of bench_scorer.py (which measures end to end).

    python load_tests/bench_batch.py [--batch-size 500] [--batches 60] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
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
from fraudstream.scoring.core import BatchScorer, InputRecord
from fraudstream.scoring.models import load_model_set
from fraudstream.scoring.service import tune_gc
from fraudstream.scoring.state import ScorerState, redis_client


def key_memory(client: redis.Redis, prefix: str) -> dict[str, tuple[int, float]]:
    """Key count and mean `MEMORY USAGE` per key kind (entity states, memos, fences)."""
    found: dict[str, list[str]] = defaultdict(list)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = key.decode().removeprefix(f"{prefix}:").split(":", 1)[0]
        found[kind].append(key)
    report = {}
    for kind, keys in sorted(found.items()):
        sample = keys[:500]
        sizes = [int(cast(int, client.memory_usage(k, samples=0))) for k in sample]
        report[kind] = (len(keys), sum(sizes) / len(sizes))
    return report


@dataclass
class Measured:
    """What one run of the batches measured."""

    events: int
    wall_s: float
    stages: dict[str, float]
    redis_stats: dict[str, dict[str, float]]
    memory: dict[str, tuple[int, float]]


def build_scorer(client: redis.Redis, registry_dir: Path) -> BatchScorer:
    rules = RuleSource(REPO / "config" / "rules.yaml")
    models = load_model_set(Registry(registry_dir), "fraud")
    return BatchScorer(
        rules=lambda: rules.pack, models=lambda: models,
        state=ScorerState(client, prefix="bench:fs", memo_ttl_s=900),
        lists=RedisLists(client, prefix="bench:list"),
    )  # fmt: skip


def measure(
    args: argparse.Namespace, client: redis.Redis, scorer: BatchScorer, load: Load
) -> tuple[Measured, cProfile.Profile | None]:
    total = len(load.payloads)
    batches = [
        [InputRecord("transactions", 0, i, int(time.time() * 1000), load.keys[i],
                     load.payloads[i]) for i in range(start, start + args.batch_size)]
        for start in range(0, total, args.batch_size)
    ]  # fmt: skip
    for batch in batches[: args.warmup]:
        scorer.save(scorer.process(batch))
    client.config_resetstat()
    profiler = cProfile.Profile() if args.profile else None
    stages: dict[str, float] = defaultdict(float)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    for batch in batches[args.warmup :]:
        result = scorer.process(batch)
        scorer.save(result)  # the service saves on its commit thread, overlapping the next batch
        for stage, seconds in result.stage_seconds.items():
            stages[stage] += seconds
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    redis_stats = cast(dict[str, dict[str, float]], client.info("commandstats"))
    measured = Measured(
        args.batch_size * args.batches, wall, stages, redis_stats, key_memory(client, "bench:fs")
    )
    return measured, profiler


def report(run: Measured, batch_size: int) -> None:
    events = run.events
    print(f"{events:,} events in batches of {batch_size}: {events / run.wall_s:,.0f} events/s, "
          f"{run.wall_s / events * 1e6:.1f} µs/event in process()")  # fmt: skip
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
    print("Redis memory per key (MEMORY USAGE, mean of up to 500 sampled keys):")
    for kind, (count, mean) in run.memory.items():
        print(f"  {kind:<10} {mean:6.0f} bytes ({count:,} keys)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
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
            scorer = build_scorer(client, workdir / "registry")
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
