"""Pydantic models of every message on our topics: the product's API.

Each model is strict (no silent type coercion), forbids unknown fields so a producer's
typo is reported instead of ignored, and carries `schema_version` so consumers can evolve.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from fraudstream.contracts.fields import (
    MAX_FEATURES,
    Amount,
    CardBin,
    CardToken,
    CountryCode,
    Currency,
    FeatureName,
    FiniteFloat,
    Identifier,
    IpAddress,
    Mcc,
    PanFreeIdentifier,
    Probability,
    ReasonCode,
    ShortText,
)


class Contract(BaseModel):
    """Base of all topic messages."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Channel(StrEnum):
    POS = "pos"
    ECOMMERCE = "ecommerce"
    ATM = "atm"
    MOTO = "moto"
    RECURRING = "recurring"


class Transaction(Contract):
    """A card payment to score; key on the `transactions` topic is `card_token`.

    No identifier may look like a raw card number (refused as `pan_detected`); `ip` is
    held to IPv4/IPv6 syntax, which no PAN satisfies."""

    schema_version: Literal[1] = 1
    transaction_id: PanFreeIdentifier
    event_time: AwareDatetime = Field(description="When the payment happened, with time zone.")
    card_token: CardToken = Field(description="Network or vault token, never a raw PAN.")
    card_bin: CardBin | None = Field(default=None, description="Issuer BIN (6-8 digits).")
    customer_id: PanFreeIdentifier
    merchant_id: PanFreeIdentifier
    mcc: Mcc
    amount: Amount = Field(description="In major units of `currency`, > 0.")
    currency: Currency
    channel: Channel
    card_present: bool
    country: CountryCode
    latitude: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    device_id: PanFreeIdentifier | None = None
    ip: IpAddress | None = None
    features: Annotated[dict[FeatureName, FiniteFloat], Field(max_length=MAX_FEATURES)] | None = (
        Field(default=None, description="Producer-computed numeric attributes models may use.")
    )

    @model_validator(mode="after")
    def _location_complete(self) -> Self:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude must be sent together or not at all")
        return self


MAX_MONITORED = 16  # feature values a decision carries for the drift monitor


class Action(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    REVIEW = "review"


class DecisionPath(StrEnum):
    RULES = "rules"
    ML = "ml"
    DEGRADED = "degraded"


class ReasonSource(StrEnum):
    RULE = "rule"
    MODEL = "model"
    SYSTEM = "system"


class Reason(Contract):
    """Why a decision came out as it did: a rule's code or a feature's contribution."""

    code: ReasonCode
    source: ReasonSource
    detail: Annotated[str, Field(max_length=256)] = ""
    feature: FeatureName | None = None
    contribution: FiniteFloat | None = None


Reasons = Annotated[list[Reason], Field(max_length=32)]
MemberScores = Annotated[dict[Identifier, Probability], Field(max_length=16)]


class Decision(Contract):
    """The answer for one transaction; key on `fraud.decisions` is `card_token`."""

    schema_version: Literal[1] = 1
    transaction_id: Identifier
    card_token: CardToken
    action: Action
    score: Probability | None = Field(default=None, description="None on the rules-only path.")
    member_scores: MemberScores = Field(default_factory=dict)
    reasons: Reasons = Field(default_factory=list)
    model_version: Identifier | None = None
    shadow_model_version: Identifier | None = None
    shadow_score: Probability | None = None
    path: DecisionPath
    event_time: AwareDatetime
    decided_at: AwareDatetime
    latency_ms: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        description="From the event's arrival in Kafka to the decision being produced."
    )
    monitored: Annotated[dict[FeatureName, FiniteFloat], Field(max_length=MAX_MONITORED)] | None = (
        Field(
            default=None,
            description="On the ML path: the values of the model's monitored features (its "
            "reference.json), which the drift monitor compares with training.",
        )
    )


class ReviewCase(Contract):
    """A low-confidence case for a human; key on `fraud.review` is `transaction_id`."""

    schema_version: Literal[1] = 1
    transaction: Transaction
    action_suggested: Action
    score: Probability | None
    member_scores: MemberScores = Field(default_factory=dict)
    reasons: Reasons = Field(default_factory=list)
    contributions: Annotated[dict[FeatureName, FiniteFloat], Field(max_length=64)] = Field(
        default_factory=dict
    )
    model_version: Identifier | None = None
    path: DecisionPath
    created_at: AwareDatetime


class Verdict(StrEnum):
    FRAUD = "fraud"
    LEGIT = "legit"


class LabelSource(StrEnum):
    REVIEWER = "reviewer"
    CHARGEBACK = "chargeback"
    CUSTOMER_REPORT = "customer_report"
    SIMULATOR = "simulator"


class Label(Contract):
    """Ground truth for a transaction; key on `fraud.labels` is `transaction_id`."""

    schema_version: Literal[1] = 1
    transaction_id: Identifier
    verdict: Verdict
    source: LabelSource
    actor: Identifier | None = Field(default=None, description="Reviewer id or feed name.")
    labelled_at: AwareDatetime
    card_token: CardToken | None = None
    merchant_id: Identifier | None = Field(
        default=None, description="Lets merchant risk features learn from the label."
    )
    event_time: AwareDatetime | None = Field(
        default=None,
        description="The transaction's time: label risk counts the label on that day "
        "(without it, on the day it was labelled).",
    )
    device_id: PanFreeIdentifier | None = Field(
        default=None, description="The transaction's device: lets device risk learn."
    )
    ip: IpAddress | None = Field(
        default=None, description="The transaction's IP: lets IP risk learn."
    )
    note: ShortText = ""


class RetrainTrigger(Contract):
    """Sustained drift seen by the monitor; key on `fraud.retrain` is `model_name`."""

    schema_version: Literal[1] = 1
    trigger_id: Identifier
    model_name: Identifier
    model_version: Identifier | None = Field(
        default=None, description="The version whose traffic drifted (the one detected on)."
    )
    detector: Identifier
    feature: FeatureName | None = Field(default=None, description="For a feature's detector.")
    statistic: Identifier
    value: FiniteFloat
    threshold: FiniteFloat
    severe: bool = Field(default=False, description="One severe alarm triggered it alone.")
    window_start: AwareDatetime
    window_end: AwareDatetime
    triggered_at: AwareDatetime
    evidence: Annotated[dict[Identifier, FiniteFloat], Field(max_length=64)] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _window_ordered(self) -> Self:
        if self.window_end < self.window_start:
            raise ValueError("window_end must not be before window_start")
        return self


MAX_RULE_PACK_CHARS = 256 * 1024


class RulePackEvent(Contract):
    """A rule pack published for every scorer; key on the compacted `fraud.rules` is
    `pack`. `text` is the pack's YAML, validated again by each scorer that reads it."""

    schema_version: Literal[1] = 1
    pack: Identifier = Field(description="Which pack this is (scorers follow one by name).")
    version: Annotated[str, Field(min_length=1, max_length=64)]
    text: Annotated[str, Field(min_length=1, max_length=MAX_RULE_PACK_CHARS)]
    actor: Identifier
    at: AwareDatetime


class ModelEventType(StrEnum):
    REGISTERED = "registered"
    SHADOW = "shadow"
    CANARY = "canary"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    RETIRED = "retired"


class ModelEvent(Contract):
    """A model lifecycle change; key on the compacted `fraud.models` is `model_name`."""

    schema_version: Literal[1] = 1
    model_name: Identifier
    version: Identifier
    event: ModelEventType
    canary_share: Probability | None = Field(
        default=None, description="Share of cards routed to the challenger (canary only)."
    )
    actor: Identifier
    at: AwareDatetime
    note: ShortText = ""

    @model_validator(mode="after")
    def _canary_share(self) -> Self:
        if (self.event is ModelEventType.CANARY) != (self.canary_share is not None):
            raise ValueError("canary_share is required for canary events and only for them")
        return self


class DeadLetterReason(StrEnum):
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    PAN_DETECTED = "pan_detected"
    OVERSIZE = "oversize"
    EMPTY = "empty"
    DUPLICATE_ID = "duplicate_id"
    EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
    OUTPUT_TOO_LARGE = "output_too_large"  # its decision or review case exceeds the topic's limit
    POISON = "poison"  # the batch failed twice the same way: isolated and set aside
    PROCESSING_ERROR = "processing_error"


class FieldError(Contract):
    """One validation problem, without the offending input (it may hold a PAN)."""

    loc: Annotated[str, Field(max_length=256)]
    type: Annotated[str, Field(max_length=64)]
    msg: Annotated[str, Field(max_length=512)]


class Header(Contract):
    key: Annotated[str, Field(max_length=256)]
    value_b64: str | None


class DeadLetter(Contract):
    """A record we could not process, kept with its original bytes (PANs masked), cut to
    the dead-letter topic's size limit when they would not fit (flagged `*_truncated`)."""

    schema_version: Literal[1] = 1
    reason: DeadLetterReason
    detail: Annotated[str, Field(max_length=2048)]
    errors: Annotated[list[FieldError], Field(max_length=50)] = Field(default_factory=list)
    source_topic: str
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    timestamp_ms: int | None = None
    key_b64: str | None = None
    value_b64: str | None = None
    value_redacted: bool = Field(
        default=False,
        description="True when PAN-like digit runs were masked in the key, value or headers.",
    )
    value_truncated: bool = Field(
        default=False, description="True when value_b64 holds only the value's first bytes."
    )
    original_size_bytes: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="Size of the original value in bytes (None: no value)."
    )
    key_truncated: bool = Field(
        default=False, description="True when key_b64 holds only the key's first bytes."
    )
    headers: Annotated[list[Header], Field(max_length=64)] = Field(default_factory=list)
    headers_truncated: bool = Field(
        default=False, description="True when headers were dropped (over 64, or to fit)."
    )
    service: Identifier
    failed_at: AwareDatetime
