"""`feature_spec.json`: a model version's input columns, and the pipeline spec it was built on."""

from __future__ import annotations

import math
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraudstream.contracts.fields import FeatureName
from fraudstream.features.spec import FeatureSpec


class FeatureSpecDoc(BaseModel):
    """The model's input: feature names in column order, dtypes and missing-value defaults.

    Written as `feature_spec.json` in every model version. `defaults` is the value the
    logistic-regression member imputes for a missing (NaN) feature; features without a
    default are imputed with their training median. LightGBM handles NaN natively.
    `source` is free-form provenance filled by the feature pipeline.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    names: list[FeatureName] = Field(min_length=1)
    dtypes: list[Literal["float32"]] = Field(default_factory=list)
    defaults: dict[str, float] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_dtypes(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dtypes" not in data and "names" in data:
            return {**data, "dtypes": ["float32"] * len(data["names"])}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.names)) != len(self.names):
            raise ValueError("feature names must be unique")
        if len(self.dtypes) != len(self.names):
            raise ValueError("dtypes must list one dtype per feature name")
        unknown = sorted(set(self.defaults) - set(self.names))
        if unknown:
            raise ValueError(f"defaults given for unknown features: {unknown}")
        if not all(math.isfinite(v) for v in self.defaults.values()):
            raise ValueError("defaults must be finite numbers")
        return self


def feature_spec_of(doc: FeatureSpecDoc) -> FeatureSpec:
    """The pipeline's spec stored with a model version (what the scorer rebuilds)."""
    return FeatureSpec.model_validate(doc.source["feature_spec"])
