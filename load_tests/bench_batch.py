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
from pathlib import Path

from bench_scorer import REPO, STAGES, simulate_load, train
from fraudstream.localstack import redis_server
from fraudstream.localstack.processes import free_port, stop, wait_until
from fraudstream.registry import Registry
from fraudstream.rules.engine import RuleSource
from fraudstream.rules.lists import RedisLists
from fraudstream.scoring.core import BatchScorer, InputRecord
from fraudstream.scoring.models import load_model_set
from fraudstream.scoring.state import ScorerState, redis_client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--train-transactions", type=int, default=60_000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile top 30")
    args = parser.parse_args()
    total = args.batch_size * (args.batches + args.warmup)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        pid = redis_server.start(workdir, port)
        try:
            wait_until(lambda: redis_server.ping(port), 10.0)
            train(workdir / "registry", args.train_transactions)
            load = simulate_load(total, seed=5)
            client = redis_client(f"redis://127.0.0.1:{port}/0", 200)
            rules = RuleSource(REPO / "config" / "rules.yaml")
            models = load_model_set(Registry(workdir / "registry"), "fraud")
            scorer = BatchScorer(
                rules=lambda: rules.pack, models=lambda: models,
                state=ScorerState(client, prefix="bench:fs", memo_ttl_s=900),
                lists=RedisLists(client, prefix="bench:list"),
            )  # fmt: skip
            batches = [
                [InputRecord("transactions", 0, i, int(time.time() * 1000), load.keys[i],
                             load.payloads[i]) for i in range(start, start + args.batch_size)]
                for start in range(0, total, args.batch_size)
            ]  # fmt: skip
            for batch in batches[: args.warmup]:
                scorer.process(batch)
            profiler = cProfile.Profile() if args.profile else None
            stages: dict[str, float] = defaultdict(float)
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            for batch in batches[args.warmup :]:
                result = scorer.process(batch)
                for stage, seconds in result.stage_seconds.items():
                    stages[stage] += seconds
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - started
        finally:
            stop(pid, "redis-server")
    events = args.batch_size * args.batches
    print(f"{events:,} events in batches of {args.batch_size}: {events / wall:,.0f} events/s, "
          f"{wall / events * 1e6:.1f} µs/event in process()")  # fmt: skip
    accounted = 0.0
    for stage in (*STAGES, *sorted(set(stages) - set(STAGES))):
        if stage in stages:
            accounted += stages[stage]
            print(f"  {stage:<10} {stages[stage] / events * 1e6:7.1f} µs/event")
    print(f"  {'other':<10} {(wall - accounted) / events * 1e6:7.1f} µs/event (save, glue)")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
