"""What to simulate: size, time span, fraud mix, label delays and drift, in one frozen model.

Every knob has a realistic default, so `SimulationConfig()` gives a month of one million
payments with ~0.4 % fraud; tests shrink it and switch scenarios on and off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from fraudstream.contracts.fields import Identifier, Mcc
from fraudstream.errors import ConfigurationError


class SimulatorError(ConfigurationError):
    """The simulator was asked for something it cannot do."""


class Scenario(StrEnum):
    """Fraud patterns the simulator can inject (see README.md in this package)."""

    SPREE = "spree"
    CARD_TESTING = "card_testing"
    COMPROMISED_MERCHANT = "compromised_merchant"
    ACCOUNT_TAKEOVER = "account_takeover"
    HIGH_AMOUNT = "high_amount"
    COMPROMISED_TERMINAL = "compromised_terminal"  # off by default (see the README)


# Code 0 is legitimate traffic; scenario codes follow the enum order.
SCENARIO_NAMES: tuple[str, ...] = ("", *(s.value for s in Scenario))
SCENARIO_CODE: dict[Scenario, int] = {s: i + 1 for i, s in enumerate(Scenario)}

Share = Annotated[float, Field(ge=0.0, le=1.0)]
Positive = Annotated[float, Field(gt=0.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ScenarioConfig(_Frozen):
    """One scenario: on or off, and its share of all fraudulent payments."""

    enabled: bool = True
    weight: Annotated[float, Field(gt=0.0)] = 1.0


class LabelConfig(_Frozen):
    """How ground truth reaches the label stream, and how late."""

    unreported_share: Share = Field(
        default=0.15, description="Share of fraud incidents nobody ever reports."
    )
    customer_report_share: Share = Field(
        default=0.25, description="Share of reported incidents the card holder calls in."
    )
    customer_report_median_days: Positive = 2.0
    chargeback_median_days: Positive = 18.0
    chargeback_sigma: Positive = Field(default=0.8, description="Lognormal sigma of delays.")
    max_delay_days: Positive = 90.0
    reviewer_share_fraud: Share = Field(
        default=0.05, description="Share of fraudulent payments a reviewer labels within hours."
    )
    reviewer_share_legit: Share = Field(
        default=0.001, description="Share of legitimate payments a reviewer labels."
    )
    reviewer_median_hours: Positive = 3.0
    reviewer_error_rate: Share = Field(
        default=0.02, description="Share of reviewer verdicts that are wrong."
    )


class DriftConfig(_Frozen):
    """A change of the world from `at` on, for testing drift detection and retraining."""

    at: AwareDatetime
    amount_multiplier: Positive = Field(
        default=1.0, description="Legitimate amounts after `at` are multiplied by this."
    )
    mcc_weight_multipliers: dict[Mcc, Positive] = Field(
        default_factory=dict, description="Merchant choice after `at` re-weighted by MCC."
    )
    online_share_multiplier: Positive = Field(
        default=1.0, description="Card holders' share of online payments after `at`, scaled."
    )
    new_scenarios: tuple[Scenario, ...] = Field(
        default=(), description="Scenarios that only start at `at` (they must be enabled)."
    )


class SimulationConfig(_Frozen):
    """A whole simulation, reproducible from `seed`."""

    seed: int = 7
    start: AwareDatetime = datetime(2026, 1, 5, tzinfo=UTC)
    days: Annotated[float, Field(gt=0.0, le=366.0)] = 30.0
    n_transactions: Annotated[int, Field(ge=100, le=50_000_000)] = 1_000_000
    n_cards: Annotated[int, Field(ge=10)] = 50_000
    n_merchants: Annotated[int, Field(ge=10)] = 5_000
    fraud_rate: Annotated[float, Field(ge=0.001, le=0.01)] = Field(
        default=0.004,
        description="Share of payments that are fraud, split over the enabled scenarios.",
    )
    id_prefix: Identifier | None = Field(
        default=None, description="Transaction id prefix; default `sim-<seed>`."
    )
    spree: ScenarioConfig = ScenarioConfig(weight=0.30)
    card_testing: ScenarioConfig = ScenarioConfig(weight=0.20)
    compromised_merchant: ScenarioConfig = ScenarioConfig(weight=0.25)
    account_takeover: ScenarioConfig = ScenarioConfig(weight=0.15)
    high_amount: ScenarioConfig = ScenarioConfig(weight=0.10)
    compromised_terminal: ScenarioConfig = ScenarioConfig(enabled=False, weight=0.25)
    labels: LabelConfig = LabelConfig()
    drift: DriftConfig | None = None

    @model_validator(mode="after")
    def _drift_inside(self) -> Self:
        if self.drift is None:
            return self
        if not self.start < self.drift.at < self.end:
            raise ValueError("drift.at must lie strictly inside [start, start + days)")
        off = [s for s in self.drift.new_scenarios if not self.scenario(s).enabled]
        if off:
            raise ValueError(f"drift.new_scenarios must be enabled: {off}")
        return self

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def prefix(self) -> str:
        return self.id_prefix or f"sim-{self.seed}"

    def scenario(self, scenario: Scenario) -> ScenarioConfig:
        """The settings of one scenario."""
        config: ScenarioConfig = getattr(self, scenario.value)
        return config

    def only(self, *scenarios: Scenario) -> SimulationConfig:
        """A copy with exactly `scenarios` enabled (none: legitimate traffic only)."""
        update = {
            s.value: self.scenario(s).model_copy(update={"enabled": s in scenarios})
            for s in Scenario
        }
        return self.model_copy(update=update)

    def fraud_counts(self, n_transactions: int) -> dict[Scenario, int]:
        """How many fraudulent payments each enabled scenario contributes (exact total)."""
        enabled = [s for s in Scenario if self.scenario(s).enabled]
        if not enabled:
            return {}
        total = round(self.fraud_rate * n_transactions)
        weights = [self.scenario(s).weight for s in enabled]
        raw = [total * w / sum(weights) for w in weights]
        counts = [int(r) for r in raw]
        by_remainder = sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])
        for i in by_remainder[: total - sum(counts)]:
            counts[i] += 1
        return dict(zip(enabled, counts, strict=True))
