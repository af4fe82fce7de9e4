"""Shared test configuration: the hypothesis profile every run uses.

The `ci` profile (the default; pick another with `HYPOTHESIS_PROFILE`) turns off the
per-example deadline and the too-slow health check: on a loaded machine a slow draw says
nothing about the code under test, and a property test must not fail for it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
