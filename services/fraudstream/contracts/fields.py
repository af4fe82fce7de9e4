"""Constrained field types shared by the topic contracts."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import PydanticCustomError

MAX_ID_LENGTH = 64
MAX_AMOUNT = 1_000_000_000.0
MAX_FEATURES = 64

# Active ISO 4217 codes usable for card payments (funds codes and metals excluded).
# ANG and XCG are both listed: XCG replaces ANG during 2025-2026.
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()
)

_PAN_DIGITS = re.compile(r"\d{13,19}")
# 13-19 digits, optionally grouped by single spaces or dashes, not part of a longer number.
PAN_PATTERN = re.compile(rb"(?<![0-9])(?:[0-9][ -]?){12,18}[0-9](?![0-9])")


def looks_like_pan(value: str) -> bool:
    """True when `value` is 13-19 digits once spaces and dashes are removed."""
    return _PAN_DIGITS.fullmatch(value.replace(" ", "").replace("-", "")) is not None


def mask_pans(data: bytes) -> tuple[bytes, bool]:
    """Mask every PAN-like digit run to first-6/last-4 (PCI truncation); says if any was found."""
    found = False

    def _mask(match: re.Match[bytes]) -> bytes:
        nonlocal found
        found = True
        digits = re.sub(rb"[ -]", b"", match.group(0))
        return digits[:6] + b"*" * (len(digits) - 10) + digits[-4:]

    return PAN_PATTERN.sub(_mask, data), found


def _not_pan(value: object) -> object:
    if isinstance(value, str) and looks_like_pan(value):
        raise PydanticCustomError(
            "pan_detected",
            "looks like a raw card number (13-19 digits); send a token or an opaque id "
            "instead, never the PAN",
        )
    return value


def _valid_ip(value: str) -> str:
    # Dotted IPv4 is fully checked by the Rust regex below; only IPv6 needs the stdlib.
    if ":" in value:
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            raise PydanticCustomError("ip_address", "not a valid IPv4 or IPv6 address") from None
    return value


def _known_currency(value: str) -> str:
    if value not in ISO_4217:
        raise PydanticCustomError(
            "unknown_currency", "not an active ISO 4217 currency code (for example EUR, USD)"
        )
    return value


Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$"),
]
# The PAN check runs first so "4111 1111 1111 1111" is reported as a PAN, not a bad pattern.
# Every identifier a producer sends on a payment is checked: a PAN pasted into any id field
# would otherwise be stored and keyed on downstream.
PanFreeIdentifier = Annotated[Identifier, BeforeValidator(_not_pan)]
CardToken = PanFreeIdentifier
CardBin = Annotated[str, Field(pattern=r"^[0-9]{6,8}$", description="issuer BIN")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_known_currency)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Mcc = Annotated[str, Field(pattern=r"^[0-9]{4}$", description="ISO 18245 merchant category")]
Amount = Annotated[float, Field(gt=0, le=MAX_AMOUNT, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FEATURE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
FeatureName = Annotated[str, Field(pattern=FEATURE_NAME_PATTERN)]
ReasonCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,47}$")]
ShortText = Annotated[str, Field(max_length=1024)]

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IpAddress = Annotated[
    str,
    Field(
        max_length=45,
        pattern=rf"^(?:(?:{_OCTET}\.){{3}}{_OCTET}|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)$",
        description="IPv4 (dotted) or IPv6 address",
    ),
    AfterValidator(_valid_ip),
]
