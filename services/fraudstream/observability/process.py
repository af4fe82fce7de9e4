"""A service process's entry point: log lines to stderr, one clean line for our errors."""

from __future__ import annotations

import logging
from collections.abc import Callable

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
