"""The scorer's settings (env `FRAUD_SCORER_*` and the common ones)."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field

from fraudstream.settings import CommonSettings


def _host_id() -> str:
    """The host name, reduced to the characters an instance id allows."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64] or "0"


class ScorerSettings(CommonSettings):
    """Batching, exactly-once identity, model, rules and dependency timeouts."""

    scorer_group_id: str = Field(default="fraud-scorer", description="Kafka consumer group.")
    scorer_instance: str = Field(
        default_factory=_host_id,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Stable per-instance id (default: the host name, which is the pod name "
        "on Kubernetes); transactional.id is <group>-<instance>, so a restarted instance "
        "fences its previous incarnation. Set it when several scorers share a host.",
    )
    scorer_batch_max: int = Field(default=500, ge=1, le=10_000, description="Records per batch.")
    scorer_batch_wait_ms: int = Field(
        default=5, ge=0, le=1000, description="Longest wait for a batch to fill."
    )
    scorer_delivery: Literal["exactly_once", "at_least_once"] = Field(
        default="exactly_once",
        description="exactly_once: outputs and offsets commit in one Kafka transaction "
        "(read_committed readers see each decision once, after the commit); at_least_once: "
        "decisions are visible as soon as acknowledged, and after a crash a batch may be "
        "decided again with byte-identical messages (deduplicate by transaction_id).",
    )
    scorer_transaction_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Client-side budget for each transaction call. The broker aborts a "
        "transaction left open for twice this (the producer's transaction.timeout.ms): a "
        "frozen scorer holds read_committed readers of fraud.decisions back that long.",
    )
    registry_dir: Path = Field(default=Path("models"), description="Model registry root.")
    model_name: str = Field(default="fraud", description="Registry model to serve.")
    rules_file: Path = Field(default=Path("config/rules.yaml"), description="Rule pack.")
    rules_source: Literal["file", "topic"] = Field(
        default="file",
        description="file: rules_file, reloaded when it changes; topic: the pack published "
        "as rules_pack on topic_rules (`fraudctl rules publish`), the same for every "
        "instance, with rules_file (if present) until one is published.",
    )
    rules_pack: str = Field(
        default="default", pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Name of the published pack to follow (rules_source=topic).",
    )  # fmt: skip
    redis_timeout_ms: int = Field(
        default=250,
        ge=1,
        le=5000,
        description="Per-call Redis timeout on the hot path. 25 ms timed out on a busy 2-core "
        "machine with no fault at all (catch-up bursts, the commit thread's write queued "
        "behind the next read); 250 ms did not, and a dead Redis costs it only until the "
        "circuit opens.",
    )
    state_inline_catch_up_max: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="A partition at most this many offsets behind in Redis is caught up from "
        "the log before its next batch; a larger gap is replayed in the background while "
        "its decisions are degraded.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
    metrics_port: int = Field(default=9400, ge=0, le=65535, description="0 picks a free port.")
    degraded_review_factor: float = Field(default=0.5, gt=0, le=1)
    rules_only_review_amount: float = Field(default=1000.0, gt=0)

    @property
    def transactional_id(self) -> str:
        return f"{self.scorer_group_id}-{self.scorer_instance}"
