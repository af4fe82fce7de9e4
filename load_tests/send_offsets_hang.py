"""How long `send_offsets_to_transaction(timeout=10)` blocks while the broker is away.

librdkafka ignores that call's own timeout when the coordinator cannot be reached
(librdkafka#5456); a network request is bounded only by `socket.timeout.ms`. This probe
opens a transaction, stops the broker, calls send_offsets_to_transaction with the
scorer's 10 s timeout, starts the broker again after --down seconds, and reports when the
call returned: with librdkafka's 60 s default and with `kafka_clients.REQUEST_TIMEOUT`.

    python load_tests/send_offsets_hang.py [--trials 2] [--down 15]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic

from fraudstream import kafka_clients
from fraudstream.localstack import kafka, processes
from fraudstream.localstack.stack import LocalStack, StackState
from fraudstream.settings import CommonSettings

REPO = Path(__file__).resolve().parents[1]
VARIANTS: dict[str, dict[str, Any]] = {
    "librdkafka default (60 s)": {"socket.timeout.ms": 60_000},
    "kafka_clients.REQUEST_TIMEOUT": {},
}


def open_transaction(boot: str, variant: dict[str, Any]) -> tuple[Producer, Any, Any]:
    """A transaction with one output, and the group's positions and metadata to commit."""
    settings, run = CommonSettings(), uuid.uuid4().hex[:6]
    admin = kafka_clients.admin_client(settings, boot)
    source, sink = f"in-{run}", f"out-{run}"
    for future in admin.create_topics([NewTopic(source, 1, 1), NewTopic(sink, 1, 1)]).values():
        future.result(30)
    seed = kafka_clients.producer(settings, boot)
    seed.produce(source, b"x")
    seed.flush(10)
    consumer = kafka_clients.consumer(settings, boot, f"g-{run}")
    consumer.subscribe([source])
    while (message := consumer.poll(1)) is None or message.error() is not None:
        pass
    producer = kafka_clients.producer(settings, boot, {"transactional.id": f"t-{run}", **variant})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(sink, b"y")
    producer.flush(10)
    positions = consumer.position(consumer.assignment())
    return producer, positions, consumer.consumer_group_metadata()


def trial(stack: LocalStack, state: StackState, variant: dict[str, Any], down_s: float) -> str:
    producer, positions, metadata = open_transaction(state.kafka_bootstrap, variant)
    stopped = time.monotonic()
    processes.stop(state.kafka_pid, kafka.MAIN_CLASS, timeout_s=60)
    outcome: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        try:
            producer.send_offsets_to_transaction(positions, metadata, 10)
            outcome["error"] = "none"
        except KafkaException as exc:
            outcome["error"] = exc.args[0].name()
        outcome["seconds"] = time.monotonic() - started

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    time.sleep(max(0.0, stopped + down_s - time.monotonic()))
    stack.up(say=lambda _line: None)
    back = time.monotonic() - stopped
    caller.join(120)
    seconds, error = outcome.get("seconds", float("nan")), outcome.get("error")
    return f"returned after {seconds:.1f} s ({error}); broker back {back:.1f} s after the stop"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--down", type=float, default=15.0, help="seconds the broker is down")
    args = parser.parse_args()
    quiet = logging.getLogger("fraudstream.kafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    workdir = Path(tempfile.mkdtemp(prefix="send-offsets-hang-"))
    stack = LocalStack(CommonSettings(state_dir=workdir / "stack", cache_dir=REPO / ".cache"))
    stack.up(say=lambda line: print(f"  {line}"))
    try:
        for _ in range(args.trials):
            for name, variant in VARIANTS.items():
                state = stack.load()
                assert state is not None
                print(f"{name}: {trial(stack, state, variant, args.down)}", flush=True)
    finally:
        stack.down(say=lambda line: print(f"  {line}"))


if __name__ == "__main__":
    main()
