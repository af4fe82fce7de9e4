"""`FRAUD_REVIEW_*`: the review service's database, queues, leases and console."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from fraudstream.settings import CommonSettings


class ReviewSettings(CommonSettings):
    """The review service's settings (README "Review console")."""

    review_database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the case store, for example postgresql+psycopg://"
        "user:password@host/db; unset: SQLite at <state_dir>/review.db.",
    )
    review_group: str = Field(default="fraud-review", description="Consumer group of intake.")
    review_host: str = Field(default="127.0.0.1", description="Bind address of the console.")
    review_port: int = Field(default=8480, ge=0, le=65535, description="0 picks a free port.")
    review_cookie_secure: bool = Field(
        default=True,
        description="Session cookies only over HTTPS (browsers treat "
        "http://127.0.0.1 and localhost as secure too).",
    )
    review_session_idle_s: float = Field(default=30 * 60, gt=0, description="Idle logout.")
    review_session_max_s: float = Field(default=12 * 3600, gt=0, description="Longest session.")
    review_lockout_failures: int = Field(default=5, ge=1, description="Failed logins in a row.")
    review_lockout_s: float = Field(default=15 * 60, gt=0, description="Lockout after them.")
    review_lease_s: float = Field(
        default=10 * 60,
        gt=0,
        description="A claim lapses after this long without activity "
        "from its holder (each view or action renews it).",
    )
    review_urgent_s: float = Field(
        default=15 * 60, gt=0, description="Cases due within this long sort before the rest."
    )
    review_high_value_amount: float = Field(
        default=1000.0, gt=0, description="From this amount a case goes to the high-value queue."
    )
    review_sla_high_value_s: float = Field(default=3600.0, gt=0)
    review_sla_rules_s: float = Field(default=2 * 3600.0, gt=0)
    review_sla_standard_s: float = Field(default=4 * 3600.0, gt=0)
    review_sla_escalation_s: float = Field(default=3600.0, gt=0)
    review_archive_url: str | None = Field(
        default=None,
        description="The archive (FRAUD_ARCHIVE_URL) for card timelines; unset: "
        "the timeline shows the card's cases only.",
    )
    review_relay_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="How often the outbox relay looks for labels."
    )
    review_transactional_id: str = Field(
        default="fraudstream-review-relay",
        pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="The label relay's Kafka transactional.id: one per case database (a "
        "second relay with the same id fences the first).",
    )
    review_rules_file: Path = Field(
        default=Path("config/rules.yaml"),
        description="The rule pack, for what each reason code means on the case page.",
    )
    metrics_host: str = Field(default="127.0.0.1", description="Bind address of /metrics.")
    metrics_port: int = Field(default=9420, ge=0, le=65535, description="0 picks a free port.")

    def database_url(self) -> str:
        """The case store's URL (the secret revealed: for the engine only, never printed)."""
        if self.review_database_url is not None:
            return self.review_database_url.get_secret_value()
        return f"sqlite:///{self.state_dir / 'review.db'}"

    def sla_seconds(self) -> dict[str, float]:
        """Seconds to decide a case, per queue."""
        return {
            "high_value": self.review_sla_high_value_s,
            "rules": self.review_sla_rules_s,
            "standard": self.review_sla_standard_s,
            "escalation": self.review_sla_escalation_s,
        }
