"""The review service's Prometheus series. Per-reviewer figures (time to decision, cases
decided) are on the console's team page, not here: user ids are never metric labels."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fraudstream.review.store import CaseStore, Outcome, Summary


class ReviewMetrics:
    """Counters the service bumps, and gauges `refresh` reads from the case store."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ingested = Counter(
            "fraud_review_cases_ingested", "New cases taken from fraud.review.", registry=registry
        )
        self.duplicates = Counter(
            "fraud_review_duplicate_cases",
            "Cases read again (a replay after a restart) and ignored.",
            registry=registry,
        )
        self.invalid = Counter(
            "fraud_review_invalid_records",
            "fraud.review records that fail their contract (kept in rejected_records).",
            ["reason"],
            registry=registry,
        )
        self.verdicts = Counter(
            "fraud_review_verdicts",
            "Verdicts by outcome; overturn=true when it goes against the model's side.",
            ["verdict", "overturn"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "fraud_review_decision_seconds",
            "From claiming a case to deciding it.",
            buckets=(10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
            registry=registry,
        )
        self.sla_breaches = Counter(
            "fraud_review_sla_breaches",
            "Cases decided after their SLA.",
            ["queue"],
            registry=registry,
        )
        self.labels = Counter(
            "fraud_review_labels_produced",
            "Labels the relay produced to fraud.labels.",
            registry=registry,
        )
        self.logins = Counter(
            "fraud_review_logins", "Console logins by result.", ["result"], registry=registry
        )
        self.depth = Gauge(
            "fraud_review_queue_depth",
            "Open cases (not snoozed) per queue.",
            ["queue"],
            registry=registry,
        )
        self.oldest = Gauge(
            "fraud_review_oldest_case_age_seconds",
            "Age of the oldest open case per queue (0 when empty).",
            ["queue"],
            registry=registry,
        )
        self.overdue = Gauge(
            "fraud_review_overdue_cases", "Open cases past their SLA.", ["queue"], registry=registry
        )
        self.outbox = Gauge(
            "fraud_review_outbox_pending",
            "Labels decided but not yet on fraud.labels.",
            registry=registry,
        )
        self.approvals = Gauge(
            "fraud_review_pending_approvals",
            "Verdicts waiting for a second person.",
            registry=registry,
        )

    def count_verdict(self, outcome: Outcome) -> None:
        """A reviewer's verdict: by outcome, whether it overturns the model, its time and
        whether it missed the SLA (a verdict waiting for approval counts when given)."""
        overturn = "true" if outcome.override else "false"
        self.verdicts.labels(outcome.verdict.value, overturn).inc()
        if outcome.seconds_to_decide is not None:
            self.decision_seconds.observe(outcome.seconds_to_decide)
        if outcome.overdue:
            self.sla_breaches.labels(outcome.queue).inc()

    def refresh(self, store: CaseStore, now: datetime) -> Summary:
        """Set the gauges from the case store's summary (and return it)."""
        summary = store.summary(now)
        for queue, stats in summary.queues.items():
            self.depth.labels(queue).set(stats.open)
            age = (now - stats.oldest).total_seconds() if stats.oldest is not None else 0.0
            self.oldest.labels(queue).set(max(0.0, age))
            self.overdue.labels(queue).set(stats.overdue)
        self.outbox.set(summary.outbox_pending)
        self.approvals.set(summary.pending_approvals)
        return summary
