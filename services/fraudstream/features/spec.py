"""Which features a model uses, in which order: declared in config, resolved once.

The catalog is every feature the entity and event maths produce; a `FeatureConfig`
(YAML, see `config/features.yaml`) picks from it and adds producer-supplied features
(`Transaction.features`). The resolved `FeatureSpec` is what a model version stores.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraudstream import config_files
from fraudstream.contracts.fields import FEATURE_NAME_PATTERN
from fraudstream.features import compute
from fraudstream.features.labels import DEFAULT_DELAY_DAYS, MAX_DELAY_DAYS
from fraudstream.features.state import Entity

PRODUCER_PREFIX = "producer_"


@lru_cache(maxsize=1)
def catalog() -> tuple[str, ...]:
    """Every computed feature name, in canonical order: what `compute` returns, in the order
    the pipeline concatenates it."""
    return (
        *compute.EVENT_FEATURES,
        *compute.CARD_FEATURES,
        *compute.MERCHANT_FEATURES,
        *compute.shared_features(Entity.DEVICE),
        *compute.shared_features(Entity.IP),
    )


_FEATURE_NAME = re.compile(FEATURE_NAME_PATTERN)


class FeatureConfig(BaseModel):
    """The declared feature set (config/features.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    include: tuple[str, ...] | None = Field(
        default=None, description="Computed features to use; None means the whole catalog."
    )
    exclude: tuple[str, ...] = ()
    producer_features: dict[str, float | None] = Field(
        default_factory=dict,
        description="Transaction.features to use, with the value when absent (null: missing).",
    )
    label_delay_days: int = Field(
        default=DEFAULT_DELAY_DAYS, ge=0, le=MAX_DELAY_DAYS,
        description="Label risk leaves out the payments of this many most recent days, whose "
        "labels are mostly not known yet (features.labels).",
    )  # fmt: skip

    @field_validator("include", "exclude")
    @classmethod
    def _known(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = sorted(set(names or ()) - set(catalog()))
        if unknown:
            raise ValueError(f"unknown features {unknown}; the catalog is {list(catalog())}")
        return names

    @field_validator("producer_features")
    @classmethod
    def _producer_names(cls, features: dict[str, float | None]) -> dict[str, float | None]:
        bad = sorted(n for n in features if not _FEATURE_NAME.fullmatch(n))
        if bad:
            raise ValueError(
                f"producer feature names {bad} can never arrive: Transaction.features keys "
                f"must match {_FEATURE_NAME.pattern} (lower case, digits, underscores, "
                "starting with a letter); rename them here and in the producer"
            )
        return features

    @classmethod
    def from_yaml(cls, path: Path) -> FeatureConfig:
        """The feature set in `path`; `ConfigurationError` names the file and the problem."""
        return config_files.load(cls, path, "feature config")

    def resolve(self) -> FeatureSpec:
        chosen = [n for n in (self.include or catalog()) if n not in set(self.exclude)]
        names = [*chosen, *(PRODUCER_PREFIX + n for n in self.producer_features)]
        defaults = {PRODUCER_PREFIX + n: v for n, v in self.producer_features.items()}
        return FeatureSpec(
            names=tuple(names), producer_defaults=defaults, label_delay_days=self.label_delay_days
        )


class FeatureSpec(BaseModel):
    """Resolved feature order; stored with each model version as feature_spec.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    names: tuple[str, ...]
    dtype: str = "float32"
    producer_defaults: dict[str, float | None] = Field(default_factory=dict)
    label_delay_days: int = Field(default=DEFAULT_DELAY_DAYS, ge=0, le=MAX_DELAY_DAYS)
    missing: str = "NaN marks a missing value (no history, no location, no device/IP)."

    def producer_default(self, name: str) -> float:
        value = self.producer_defaults.get(name)
        return math.nan if value is None else value
