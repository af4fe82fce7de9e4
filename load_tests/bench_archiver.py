"""How fast the archiver writes: a backlog of simulated transactions into Parquet.

Starts a private embedded stack (or uses KAFKA_BOOTSTRAP_SERVERS + REDIS_URL on
127.0.0.1), produces --n simulated transactions to a fresh deployment's input topic,
then runs the archiver in-process on that backlog until every record is in the archive
(a temporary directory) and prints records/s, CPU microseconds per record and bytes per
archived row. Baseline, measured in the same run: a plain read_committed consumer reading
the same backlog without decoding or writing, so the archiver's own cost shows apart from
the broker's. Bounded: --n records, and --max-seconds per pass.

    python load_tests/bench_archiver.py [--n 200000] [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "load_tests"))

from confluent_kafka.admin import AdminClient  # noqa: E402

from bench_support import deploy, infrastructure  # noqa: E402
from fraudstream import kafka_clients  # noqa: E402
from fraudstream.contracts import encode  # noqa: E402
from fraudstream.history.archiver import Archiver, ArchiverSettings  # noqa: E402
from fraudstream.simulator import SimulationConfig  # noqa: E402
from fraudstream.trainer import simulated_history  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, infrastructure(Path(tmp)) as (endpoints, _pids):
        admin = AdminClient({"bootstrap.servers": endpoints.kafka_bootstrap})
        deployment = deploy(endpoints, admin, "archiver", Path(tmp) / "registry", 20)
        settings = deployment.settings
        txs = simulated_history(SimulationConfig(seed=5, n_transactions=args.n, days=7))
        producer = kafka_clients.producer(settings, endpoints.kafka_bootstrap, {"linger.ms": 20})
        for tx in txs.transactions:
            producer.produce(settings.topic_transactions, encode(tx), key=tx.card_token.encode())
            producer.poll(0)
        producer.flush(60)
        n = len(txs.transactions)
        print(f"backlog: {n:,} transactions on {settings.topic_transactions}")

        consumer = kafka_clients.consumer(settings, endpoints.kafka_bootstrap, uuid.uuid4().hex)
        consumer.subscribe([settings.topic_transactions])
        started, cpu, read = time.perf_counter(), _cpu(), 0
        while read < n and time.perf_counter() - started < args.max_seconds:
            read += sum(1 for m in consumer.consume(5000, 0.5) if m.error() is None)
        baseline_s, baseline_cpu = time.perf_counter() - started, _cpu() - cpu
        consumer.close()
        print(f"baseline consumer: {read / baseline_s:>9,.0f} records/s  "
              f"{baseline_cpu / read * 1e6:6.1f} us CPU/record")  # fmt: skip

        archive = Path(tmp) / "archive"
        archiver_settings = ArchiverSettings(
            **{k: v for k, v in settings.model_dump().items()
               if k in ArchiverSettings.model_fields},
            archive_url=str(archive), archive_group=uuid.uuid4().hex, archive_flush_s=2.0,
        )  # fmt: skip
        archiver = Archiver(archiver_settings, endpoints.kafka_bootstrap,
                            roles=("transactions",))  # fmt: skip
        stop = threading.Event()
        worker = threading.Thread(target=archiver.run, args=(stop,))
        started, cpu = time.perf_counter(), _cpu()
        worker.start()

        def archived() -> int:
            labels = {"topic": settings.topic_transactions}
            return int(archiver.registry.get_sample_value("fraud_archive_records_total",
                                                          labels) or 0)  # fmt: skip

        while archived() < n and time.perf_counter() - started < args.max_seconds:
            time.sleep(0.05)  # polls a counter the archiver sets (no result to wait on)
        elapsed, used = time.perf_counter() - started, _cpu() - cpu
        stop.set()
        worker.join(60)
        done = archived()
        size = sum(p.stat().st_size for p in archive.rglob("*.parquet"))
        print(f"archiver:          {done / elapsed:>9,.0f} records/s  "
              f"{used / done * 1e6:6.1f} us CPU/record  {size / done:5.1f} bytes/row  "
              f"({done:,} of {n:,} in {elapsed:.1f} s)")  # fmt: skip
        return 0 if done == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
