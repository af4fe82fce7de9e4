"""Shared test configuration: the hypothesis profile every run uses.

The `ci` profile (the default; pick another with `HYPOTHESIS_PROFILE`) turns off the
per-example deadline and the too-slow health check: on a loaded machine a slow draw says
nothing about the code under test, and a property test must not fail for it.
"""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

from fraudstream.localstack import processes

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears session fixtures down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Name the daemons a test started and left running (at exit their `Popen` objects
    would only say "ResourceWarning: subprocess N is still running")."""
    left = processes.running_children()
    if left:
        print(f"\ndaemons still running at the end of the session: {left}", file=sys.stderr)
