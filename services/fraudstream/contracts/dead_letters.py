"""Dead-letter records: a refused input kept with its reason, PANs masked, size bounded.

`dead_letter` builds the `transactions.dlq` message; `mask_pan_bytes` masks the Kafka key
the record is produced under, which the message cannot do for its producer.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime

from fraudstream.contracts.codec import Rejection, encode
from fraudstream.contracts.fields import mask_pans
from fraudstream.contracts.messages import DeadLetter, Header

MAX_HEADERS = 64
MAX_HEADER_NAME = 256


def mask_pan_bytes(data: bytes | None) -> bytes | None:
    """`data` with every PAN-like digit run masked to first-6/last-4; None stays None."""
    return None if data is None else mask_pans(data)[0]


def dead_letter(
    rejection: Rejection,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None,
    service: str,
    now: datetime,
    max_bytes: int | None = None,
) -> DeadLetter:
    """The DLQ record for a rejected input: reason, position and the original bytes.

    PAN-like digit runs in the key, value, header names and header values are masked
    before they are kept. With `max_bytes`, `encode(record)` is at most that long: the
    value is cut to the room left (`value_truncated`), then headers are dropped largest
    first (`headers_truncated`), then the key is cut (`key_truncated`), then the per-field
    errors are dropped. Raises ValueError when even the reason and position do not fit.
    """
    masked_key, key_found = _masked(key)
    masked_value, value_found = _masked(value)
    kept_headers, headers_found = _masked_headers((headers or ())[:MAX_HEADERS])
    letter = DeadLetter(
        reason=rejection.reason,
        detail=rejection.detail,
        errors=list(rejection.errors),
        source_topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=timestamp_ms,
        key_b64=_b64(masked_key),
        value_b64=_b64(masked_value),
        value_redacted=key_found or value_found or headers_found,
        original_size_bytes=None if value is None else len(value),
        headers=kept_headers,
        headers_truncated=len(headers or ()) > MAX_HEADERS,
        service=service,
        failed_at=now,
    )
    if max_bytes is None or len(encode(letter)) <= max_bytes:
        return letter
    return _fit(letter, masked_key, masked_value, max_bytes)


def _masked(data: bytes | None) -> tuple[bytes | None, bool]:
    return (None, False) if data is None else mask_pans(data)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _masked_headers(headers: Sequence[tuple[str, bytes | None]]) -> tuple[list[Header], bool]:
    kept, found = [], False
    for name, value in headers:
        masked_name, name_found = mask_pans(name.encode())
        # Cut after masking (a PAN across the cut stays masked), then mask again: the cut can
        # leave the head of a longer digit run looking like a PAN.
        cut_name, _ = mask_pans(masked_name.decode()[:MAX_HEADER_NAME].encode())
        masked_value, value_found = _masked(value)
        found = found or name_found or value_found
        kept.append(Header(key=cut_name.decode(), value_b64=_b64(masked_value)))
    return kept, found


def _fit(letter: DeadLetter, key: bytes | None, value: bytes | None, max_bytes: int) -> DeadLetter:
    """Shrink `letter` to at most `max_bytes` encoded; `key` and `value` are its masked bytes.

    Base64 is ASCII without JSON escapes, so each string adds exactly its length: the room
    left for the value is `max_bytes` minus the size of the record with an empty value.
    """
    bare = letter.model_copy(update={"value_b64": None if value is None else ""})
    if len(encode(bare)) > max_bytes:
        bare = _drop_headers(bare, max_bytes)
    if key is not None and len(encode(bare)) > max_bytes:
        keyless = bare.model_copy(update={"key_b64": "", "key_truncated": True})
        key_b64, _ = _b64_prefix(key, max_bytes - len(encode(keyless)))
        bare = keyless.model_copy(update={"key_b64": key_b64})
    if len(encode(bare)) > max_bytes:
        bare = bare.model_copy(update={"errors": []})
    size = len(encode(bare))
    if size > max_bytes:
        raise ValueError(
            f"max_bytes={max_bytes} cannot hold a dead letter's reason and position "
            f"({size} bytes); raise it"
        )
    if value is None:
        return bare
    value_b64, kept = _b64_prefix(value, max_bytes - size)
    return bare.model_copy(update={"value_b64": value_b64, "value_truncated": kept < len(value)})


def _drop_headers(letter: DeadLetter, max_bytes: int) -> DeadLetter:
    """Drop headers, largest first, until `letter` would fit (sizes computed, not re-encoded:
    each header adds its JSON plus a separating comma when it is not the only one)."""
    size = len(encode(letter))
    sizes = [len(encode(header)) for header in letter.headers]
    dropped: set[int] = set()
    for index in sorted(range(len(sizes)), key=sizes.__getitem__, reverse=True):
        if size <= max_bytes:
            break
        size -= sizes[index] + (1 if len(sizes) - len(dropped) > 1 else 0)
        dropped.add(index)
    kept = [h for index, h in enumerate(letter.headers) if index not in dropped]
    truncated = letter.headers_truncated or bool(dropped)
    return letter.model_copy(update={"headers": kept, "headers_truncated": truncated})


def _b64_prefix(data: bytes, room: int) -> tuple[str, int]:
    """Base64 of the longest prefix of `data` whose encoding fits in `room` characters, and
    that prefix's length. The cut can leave a PAN-like run (the head of a longer digit
    run), so the prefix is masked again; masking never lengthens it."""
    length = max(room, 0) // 4 * 3
    prefix, _ = mask_pans(data[:length])
    return base64.b64encode(prefix).decode("ascii"), min(length, len(data))
