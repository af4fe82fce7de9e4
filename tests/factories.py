"""Valid sample messages of every contract, for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fraudstream.contracts import (
    Action,
    Channel,
    Contract,
    DeadLetter,
    DeadLetterReason,
    Decision,
    DecisionPath,
    FieldError,
    Label,
    LabelSource,
    ModelEvent,
    ModelEventType,
    Reason,
    ReasonSource,
    RetrainTrigger,
    ReviewCase,
    RulePackEvent,
    Transaction,
    Verdict,
)

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def transaction(**overrides: object) -> Transaction:
    fields: dict[str, object] = {
        "transaction_id": "tx-1",
        "event_time": NOW,
        "card_token": "card-0001",
        "customer_id": "cust-1",
        "merchant_id": "merch-1",
        "mcc": "5411",
        "amount": 42.5,
        "currency": "EUR",
        "channel": Channel.POS,
        "card_present": True,
        "country": "DE",
        "latitude": 52.52,
        "longitude": 13.405,
        "device_id": "dev-1",
        "ip": "192.0.2.10",
        "features": {"producer_risk": 0.25},
    }
    fields.update(overrides)
    return Transaction.model_validate(fields, strict=False)


def transaction_json(**overrides: object) -> dict[str, object]:
    """A valid transaction as a JSON-ready dict (what a producer sends)."""
    data = transaction().model_dump(mode="json")
    data.update(overrides)
    return data


def samples() -> list[Contract]:
    """One valid message of every contract."""
    tx = transaction()
    reasons = [
        Reason(code="VELOCITY_1H", source=ReasonSource.RULE, detail="5 payments in 1 h"),
        Reason(code="ML_FEATURE", source=ReasonSource.MODEL, feature="amount_ratio",
               contribution=1.25),
    ]  # fmt: skip
    return [
        tx,
        Decision(
            transaction_id=tx.transaction_id, card_token=tx.card_token, action=Action.REVIEW,
            score=0.42, member_scores={"lgbm": 0.5, "logreg": 0.3}, reasons=reasons,
            model_version="v1", path=DecisionPath.ML, event_time=NOW,
            decided_at=NOW + timedelta(milliseconds=12), latency_ms=12.0,
        ),
        ReviewCase(
            transaction=tx, action_suggested=Action.REVIEW, score=0.42, reasons=reasons,
            contributions={"amount_ratio": 1.25}, model_version="v1", path=DecisionPath.ML,
            created_at=NOW,
        ),
        Label(
            transaction_id=tx.transaction_id, verdict=Verdict.FRAUD, source=LabelSource.REVIEWER,
            actor="analyst-7", labelled_at=NOW, card_token=tx.card_token,
            merchant_id=tx.merchant_id, event_time=NOW,
        ),
        RetrainTrigger(
            trigger_id="trg-1", model_name="fraud", detector="adwin", statistic="score_mean",
            value=0.31, threshold=0.2, window_start=NOW - timedelta(hours=1), window_end=NOW,
            triggered_at=NOW, evidence={"n": 5000.0},
        ),
        ModelEvent(
            model_name="fraud", version="v2", event=ModelEventType.CANARY, canary_share=0.1,
            actor="ml-eng", at=NOW,
        ),
        RulePackEvent(
            pack="default", version="default-2026-11", text="version: v1\nrules: []\n",
            actor="analyst-1", at=NOW,
        ),
        DeadLetter(
            reason=DeadLetterReason.SCHEMA_VIOLATION, detail="1 invalid field(s)",
            errors=[FieldError(loc="amount", type="greater_than", msg="must be > 0")],
            source_topic="transactions", partition=0, offset=7, key_b64="Y2FyZA==",
            value_b64="e30=", service="scorer", failed_at=NOW,
        ),
    ]  # fmt: skip
