"""Operational endpoints shared by the services: Prometheus metrics, liveness, readiness."""

from __future__ import annotations

from fraudstream.observability.http import HealthServer, HealthState, serve

__all__ = ["HealthServer", "HealthState", "serve"]
