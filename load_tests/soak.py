"""Soak: one scorer for --minutes at --rate, reporting memory and latency drift.

A private embedded stack and a small model trained once; `fraudctl simulate` feeds live
transactions (a real subprocess, like a producer would) and a read_committed reader
collects every decision. Each --window seconds: decisions, the latency percentiles the
scorer reports per decision (`latency_ms`: Kafka timestamp to decision produced),
degraded decisions, and the scorer's resident memory (VmRSS). At the end: the drift from
the first full window to the last (RSS and p99), and loss and duplicates against the
input topic (every record decided or dead-lettered exactly once). Exit status 1 on loss
or duplicates.

    python load_tests/soak.py [--minutes 30] [--rate 1000] [--window 300]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "load_tests"))

from tests.integration import crash  # noqa: E402
from tests.integration.scorer_support import (  # noqa: E402
    deployment_env,
    settings_from_env,
    train_small_model,
)

from crash_stress import Clients, follow_decisions, private_stack  # noqa: E402
from fraudstream import kafka_clients  # noqa: E402
from fraudstream.localstack import processes  # noqa: E402
from fraudstream.settings import CommonSettings  # noqa: E402


@dataclass
class Window:
    """What one reporting window saw."""

    latencies_ms: list[float] = field(default_factory=list)
    degraded: int = 0


@dataclass
class Collected:
    ids: Counter[str] = field(default_factory=Counter)
    windows: list[Window] = field(default_factory=lambda: [Window()])
    rss_mb: list[float] = field(default_factory=list)
    rows: list[tuple[float, float, float]] = field(default_factory=list)  # seconds, p99, RSS
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


def _read(clients: Clients, topic: str, got: Collected) -> None:
    def count(decision: dict[str, Any]) -> None:
        with got.lock:
            got.ids[decision["transaction_id"]] += 1
            window = got.windows[-1]
            window.latencies_ms.append(float(decision["latency_ms"]))
            window.degraded += decision["path"] == "degraded"

    follow_decisions(clients, topic, got.stop, count)


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _row(index: int, seconds: float, window: Window, rss: float) -> str:
    lat = np.asarray(window.latencies_ms) if window.latencies_ms else np.asarray([np.nan])
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return (f"| {index} | {seconds:.0f} s | {len(window.latencies_ms) / seconds:,.0f} | "
            f"{p50:.1f} | {p95:.1f} | {p99:.1f} | {window.degraded} | {rss:.0f} |")  # fmt: skip


def _end_offsets(clients: Clients, topic: str) -> int:
    consumer = clients.reader(topic)
    count = kafka_clients.partition_count(consumer, topic)
    return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
               for p in range(count or 0))  # fmt: skip


def soak(args: argparse.Namespace, workdir: Path) -> int:
    with private_stack(workdir) as endpoints:
        settings = CommonSettings()
        admin = kafka_clients.admin_client(settings, endpoints.kafka_bootstrap)
        train_small_model(workdir / "registry")
        env = deployment_env(endpoints, workdir / "registry", admin)
        topics = settings_from_env(env)
        clients = Clients(settings, endpoints.kafka_bootstrap)
        log = workdir / "scorer.log"
        scorer = crash.start_scorer(env, log, None)
        got = Collected()
        reader = threading.Thread(target=_read, args=(clients, topics.topic_decisions, got),
                                  daemon=True)  # fmt: skip
        try:
            assert processes.wait_until(lambda: "assigned" in log.read_text(), 90), log
            reader.start()
            duration = args.minutes * 60
            feed = subprocess.Popen(
                [str(Path(sys.executable).parent / "fraudctl"), "simulate", "--rate",
                 str(args.rate), "--duration", str(duration), "--cards", "100000",
                 "--merchants", "5000"],
                env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
            print(f"{args.rate:g} tx/s for {args.minutes:g} min, one scorer (pid "
                  f"{scorer.pid}); a row per {args.window:g} s window", flush=True)  # fmt: skip
            print("| window | length | decisions/s | p50 ms | p95 ms | p99 ms | degraded | "
                  "scorer RSS MB |\n|---|---|---|---|---|---|---|---|", flush=True)  # fmt: skip
            started = time.monotonic()
            for index in range(1, 1_000_000):
                begun = time.monotonic()
                left = started + index * args.window - begun
                finished = processes.wait_until(lambda: feed.poll() is not None, left,
                                                interval=1)  # fmt: skip
                with got.lock:
                    window, got.windows = got.windows[-1], [*got.windows, Window()]
                got.rss_mb.append(rss_mb(scorer.pid))
                seconds = time.monotonic() - max(begun, started + (index - 1) * args.window)
                print(_row(index, max(seconds, 1e-9), window, got.rss_mb[-1]), flush=True)
                if window.latencies_ms:
                    got.rows.append((seconds, float(np.percentile(window.latencies_ms, 99)),
                                     got.rss_mb[-1]))  # fmt: skip
                if finished:
                    break
            assert feed.wait(60) == 0, "the simulator failed"
            sent = _end_offsets(clients, topics.topic_transactions)
            dead = _end_offsets(clients, topics.topic_dlq)
            processes.wait_until(lambda: len(got.ids) + dead >= sent, 120, interval=1)
            time.sleep(3)  # late repeats would show as duplicates
        finally:
            got.stop.set()
            reader.join(10)
            scorer.send_signal(signal.SIGTERM)
            scorer.wait(60)
            clients.close()
        duplicates = sum(c - 1 for c in got.ids.values() if c > 1)
        lost = sent - dead - len(got.ids)
        print(f"sent {sent:,}, decided {len(got.ids):,}, dead-lettered {dead}, lost {lost}, "
              f"duplicates {duplicates}")  # fmt: skip
        # Drift: the second full window (the first one warms up) against the last full one.
        full = [r for r in got.rows if r[0] >= 0.9 * args.window]
        if len(full) >= 3:
            (_, p99_a, rss_a), (_, p99_b, rss_b) = full[1], full[-1]
            print(f"drift window 2 -> {len(full)}: RSS {rss_a:.0f} -> {rss_b:.0f} MB "
                  f"({rss_b - rss_a:+.0f}), p99 {p99_a:.1f} -> {p99_b:.1f} ms")  # fmt: skip
    return 1 if lost or duplicates else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--window", type=float, default=300.0, help="seconds per table row")
    args = parser.parse_args()
    os.environ.setdefault("FRAUD_GIT_COMMIT", "soak")
    logging.basicConfig(level=logging.WARNING, format="    [%(name)s] %(message)s")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        code = soak(args, Path(tmp))
    sys.exit(code)


if __name__ == "__main__":
    main()
