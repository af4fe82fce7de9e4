"""Deterministic fault points for crash tests (env-guarded, inert in production).

`FRAUD_FAULT_POINT=<name>:<n>` makes the process kill itself with SIGKILL the n-th time
it reaches `point(<name>)` (n defaults to 1); `<name>:<n>:stop` freezes it with SIGSTOP
instead, one second later (a zombie the test wakes with SIGCONT; meanwhile librdkafka's
threads deliver what was produced, so the broker holds the open transaction). The
scorer's points: `before_commit` (the batch's outputs are produced, the transaction is
open), `mid_produce` (half of them are), `after_commit_before_save` (committed, Redis not
written) and `after_save`; the review service's label relay has its own three
(`review/outbox.py`). Without the variable a point costs one comparison.
"""

from __future__ import annotations

import logging
import os
import signal
import time

_log = logging.getLogger(__name__)
_spec = os.environ.get("FRAUD_FAULT_POINT", "")
_name, _, _rest = _spec.partition(":")
_count, _, _action = _rest.partition(":")
_remaining = int(_count or 1) if _name else 0
_signal = signal.SIGSTOP if _action == "stop" else signal.SIGKILL


def point(name: str) -> None:
    """Kill (or freeze) this process here if the fault point `name` is armed and due."""
    global _remaining  # noqa: PLW0603 - one counter per process, by design
    if name != _name or _remaining <= 0:
        return
    _remaining -= 1
    if _remaining == 0:
        _log.warning("fault point %s reached: sending this process %s", name, _signal.name)
        if _signal == signal.SIGSTOP:
            time.sleep(1.0)
        os.kill(os.getpid(), _signal)
