"""Names and paths of the registry's files; see models/README.md for the layout."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from fraudstream.registry.errors import RegistryError

METRICS_FILE = "metrics.json"
TRAINING_FILE = "training.json"
CARD_FILE = "MODEL_CARD.md"
PR_CURVE_FILE = "pr_curve.png"
MANIFEST_FILE = "manifest.json"
STAGES_FILE = "stages.json"
EVALUATIONS_DIR = "evaluations"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION = re.compile(r"^v\d{8}-\d{6}-[0-9a-f]{8}$")


class Manifest(BaseModel):
    """`manifest.json`: identity of the version and the SHA-256 of every other file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    version: str
    registered_at: datetime
    files: dict[str, str]


def check_model_name(name: str) -> str:
    """A model name usable as a directory and as a `fraud.models` key."""
    if not _NAME.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (max 64), "
            "starting with a letter or digit"
        )
    return name


def is_version_id(name: str) -> bool:
    """True for `v<YYYYMMDD>-<HHMMSS>-<8 hex>` directory names."""
    return _VERSION.match(name) is not None
