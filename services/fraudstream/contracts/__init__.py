"""Topic contracts: message models, field types and the batch codec."""

from __future__ import annotations

from fraudstream.contracts.codec import (
    Rejection,
    dead_letter,
    decode,
    decode_batch,
    decode_transactions,
    encode,
    encode_batch,
)
from fraudstream.contracts.messages import (
    Action,
    Channel,
    Contract,
    DeadLetter,
    DeadLetterReason,
    Decision,
    DecisionPath,
    FieldError,
    Header,
    Label,
    LabelSource,
    ModelEvent,
    ModelEventType,
    Reason,
    ReasonSource,
    RetrainTrigger,
    ReviewCase,
    Transaction,
    Verdict,
)

CONTRACTS: tuple[type[Contract], ...] = (
    Transaction,
    Decision,
    ReviewCase,
    Label,
    RetrainTrigger,
    ModelEvent,
    DeadLetter,
)

__all__ = [
    "CONTRACTS",
    "Action",
    "Channel",
    "Contract",
    "DeadLetter",
    "DeadLetterReason",
    "Decision",
    "DecisionPath",
    "FieldError",
    "Header",
    "Label",
    "LabelSource",
    "ModelEvent",
    "ModelEventType",
    "Reason",
    "ReasonSource",
    "Rejection",
    "RetrainTrigger",
    "ReviewCase",
    "Transaction",
    "Verdict",
    "dead_letter",
    "decode",
    "decode_batch",
    "decode_transactions",
    "encode",
    "encode_batch",
]
