"""The broker restarted mid-traffic (down 15 s): decisions resume within seconds of its
return, every input is decided exactly once, and state equals a clean pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from fraudstream.localstack import kafka, processes
from fraudstream.localstack.stack import Endpoints, LocalStack, kafka_ready
from tests.integration import crash
from tests.integration.scorer_support import (
    assert_state_matches_a_clean_pass,
    deployment_env,
    settings_from_env,
)
from tests.waiting import await_condition

DOWN_S = 15.0  # how long the broker stays away (the fault itself, not a synchronisation)
RESUMED_WITHIN_S = 30.0


# The restarted broker outlives this test on purpose (the session's stack stops it by
# pid); its Popen handle, dropped by LocalStack, warns when collected while it runs.
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_broker_restart_mid_traffic_resumes_and_loses_nothing(  # noqa: PLR0917
    local_stack: LocalStack | None,
    endpoints: Endpoints,
    admin: AdminClient,
    tmp_path: Path,
    small_registry: Path,
    make_producer: Callable[..., Producer],
    make_consumer: Callable[..., Consumer],
) -> None:
    if local_stack is None:
        pytest.skip("needs the embedded broker (it is stopped and started here)")
    env = deployment_env(endpoints, small_registry, admin)
    settings = settings_from_env(env)
    txs = crash.transactions(2500, seed=91)
    log = tmp_path / "scorer.log"
    proc = crash.start_scorer(env, log, None)
    reader = make_consumer(settings.topic_decisions)
    seen: list[bytes] = []
    try:
        await_condition(lambda: "assigned" in log.read_text(errors="replace"), 60)
        feeder = threading.Thread(
            target=crash.produce,
            args=(make_producer(), settings.topic_transactions, txs, 100.0), daemon=True,
        )  # fmt: skip
        feeder.start()
        seen += _read(reader, 500, 60)
        state = local_stack.load()
        assert state is not None
        assert processes.stop(state.kafka_pid, kafka.MAIN_CLASS, timeout_s=60)
        time.sleep(DOWN_S)
        local_stack.up(say=lambda _line: None)
        back = time.monotonic()
        assert kafka_ready(endpoints.kafka_bootstrap)
        before = len(seen)
        _await_read(reader, seen, lambda: len(seen) > before, RESUMED_WITHIN_S + 60)
        resumed_s = time.monotonic() - back
        feeder.join(120)
        ids = {tx.transaction_id for tx in txs}
        _await_read(reader, seen, lambda: {orjson.loads(v)["transaction_id"] for v in seen} >= ids,
                    120)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"decisions resumed {resumed_s:.1f} s after the broker was back")
    assert resumed_s < RESUMED_WITHIN_S, f"decisions resumed only after {resumed_s:.1f} s"
    crash.verdict(seen, ids, exactly_once=True)
    assert_state_matches_a_clean_pass(env)


def _read(reader: Consumer, n: int, timeout_s: float) -> list[bytes]:
    return crash.poll(reader, n, timeout_s)


def _await_read(
    reader: Consumer, seen: list[bytes], condition: Callable[[], bool], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out reading decisions"
        seen += _read(reader, 1000, 0.5)
