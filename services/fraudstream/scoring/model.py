"""A servable model version: ONNX ensemble, its feature columns and its explainer."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fraudstream.errors import FraudStreamError
from fraudstream.features.spec import PRODUCER_PREFIX, FeatureSpec, catalog
from fraudstream.model.drift_reference import DriftReference
from fraudstream.model.errors import ModelLoadError
from fraudstream.model.explain import PathExplainer, load_booster
from fraudstream.model.feature_spec import feature_spec_of
from fraudstream.model.onnx_ensemble import OnnxEnsemble
from fraudstream.registry import Registry


def trained_spec(registry: Registry, name: str, version: str) -> FeatureSpec:
    """The feature pipeline spec a version was trained with, once its files pass their
    manifest checksums (`ChecksumError`; `ModelLoadError` if the spec is unusable)."""
    registry.checked_path(name, version)
    doc = registry.show(name, version).feature_spec
    try:
        return feature_spec_of(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{name} {version}: feature_spec.json has no usable pipeline spec ({exc!r}); "
            "serve versions registered by `fraudctl train`"
        ) from exc


def scoring_spec(model_spec: FeatureSpec | None) -> FeatureSpec:
    """What the scorer computes: the whole catalog (rules may use any feature) plus the
    model's producer features; model columns are picked from it by name."""
    if model_spec is None:
        return FeatureSpec(names=catalog())
    producer = tuple(n for n in model_spec.names if n.startswith(PRODUCER_PREFIX))
    return FeatureSpec(
        names=(*catalog(), *producer), producer_defaults=dict(model_spec.producer_defaults)
    )


@dataclass
class ServingModel:
    """One loaded version, ready to score feature rows of the scoring spec."""

    name: str
    version: str
    ensemble: OnnxEnsemble
    spec: FeatureSpec
    columns: np.ndarray  # positions of the model's features in the scoring spec
    version_dir: Path
    scoring_names: tuple[str, ...]
    explainer: PathExplainer = field(repr=False)
    # The reference's features (`model.drift_reference`), with their positions in scoring rows:
    # their values go on each ML decision for the drift monitor.
    monitored: tuple[str, ...] = ()
    monitored_columns: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))

    @classmethod
    def load(
        cls, registry: Registry, name: str, version: str, scoring: FeatureSpec
    ) -> ServingModel:
        """Load, checksum-check and warm up a version for rows of `scoring`.

        Raises `RegistryError` (`ChecksumError` for corrupt files) or `ModelLoadError`;
        whatever ONNX Runtime or LightGBM raise on a bad file becomes a `ModelLoadError`.
        """
        ensemble = registry.load(name, version)
        try:
            return cls._build(name, version, ensemble, scoring)
        except FraudStreamError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot serve {name} {version} from {ensemble.version_dir}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @classmethod
    def _build(
        cls, name: str, version: str, ensemble: OnnxEnsemble, scoring: FeatureSpec
    ) -> ServingModel:
        spec = feature_spec_of(ensemble.feature_spec)
        columns = np.array([scoring.names.index(n) for n in spec.names], dtype=np.intp)
        explainer = PathExplainer(
            load_booster(ensemble.version_dir / "lightgbm.txt"), list(spec.names)
        )
        reference = DriftReference.read(ensemble.version_dir)
        monitored = tuple(reference.features) if reference is not None else ()
        at = np.array([scoring.names.index(n) for n in monitored], dtype=np.intp)
        model = cls(name, version, ensemble, spec, columns, ensemble.version_dir, scoring.names,
                    explainer, monitored, at)  # fmt: skip
        model.predict(np.zeros((1, len(scoring.names)), dtype=np.float32))  # warm up
        return model

    def columns_for(self, scoring: FeatureSpec) -> bool:
        """True when this model's column positions fit rows of `scoring`."""
        return self.scoring_names == scoring.names

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Scores, calibrated member scores and disagreement flags for scoring-spec rows."""
        features = np.ascontiguousarray(rows[:, self.columns])
        scores, members = self.ensemble.predict(features)
        return scores, members, self.ensemble.disagreement(members)

    def monitored_values(self, rows: np.ndarray) -> list[dict[str, float]]:
        """Per row, the monitored features' values (missing ones left out)."""
        names = self.monitored
        if not names:
            return [{} for _ in range(len(rows))]
        return [
            {n: v for n, v in zip(names, values, strict=True) if not math.isnan(v)}
            for values in rows[:, self.monitored_columns].astype(np.float64).tolist()
        ]

    def explain(self, rows: np.ndarray, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """Top LightGBM path contributions per scoring-spec row."""
        return self.explainer.top(rows[:, self.columns], top_k)
