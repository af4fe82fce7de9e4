"""Waiting in tests: a condition polled until a deadline (`processes.wait_until`), so no
test synchronises on a bare sleep and a timeout says what never happened."""

from __future__ import annotations

from collections.abc import Callable

from fraudstream.localstack.processes import wait_until


def await_condition(
    condition: Callable[[], object], timeout_s: float = 60.0, what: str = "the condition",
    interval_s: float = 0.05,
) -> None:  # fmt: skip
    """Return once `condition()` is truthy; fail the test after `timeout_s`."""
    held = wait_until(lambda: bool(condition()), timeout_s, interval=interval_s)
    assert held, f"timed out after {timeout_s:g} s waiting for {what}"
