"""`--json` output of the read commands: one JSON document on stdout, machine-readable
(pydantic models, dataclasses, datetimes, paths and enums as JSON values)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import click
import orjson
from pydantic import BaseModel


def _default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    return str(value)  # Path, Decimal, ...


def _finite(value: Any) -> Any:
    """NaN and infinities as null (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def echo_json(value: Any) -> None:
    """Print `value` as indented JSON (orjson: datetimes as ISO 8601, enums by value)."""
    plain = orjson.loads(orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS))
    click.echo(orjson.dumps(_finite(plain), option=orjson.OPT_INDENT_2).decode())


JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
