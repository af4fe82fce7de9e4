"""A service process's entry point: log lines to stderr, one clean line for our errors."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from fraudstream.errors import FraudStreamError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def run_service(serve: Callable[[], None], log: logging.Logger) -> None:
    """Run `serve` with INFO logging; a FraudStreamError is logged as one line and the
    process exits with status 1 (a supervisor restarts it), instead of a traceback."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        serve()
    except FraudStreamError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from exc


def stop_on_signals(log: logging.Logger, doing: str) -> threading.Event:
    """An event SIGTERM and SIGINT set (logged with what the service does before it stops).
    Install it first: a stop during a slow start-up is then clean too."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, doing)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
