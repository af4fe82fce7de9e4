"""`OnnxEnsemble`: the serving path, ONNX Runtime members plus a few numpy ops.

Needs only numpy, pydantic and onnxruntime. Each member runs once per batch; the combiner,
calibrator and member calibration come from `ensemble.json` (see `ensemble.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from fraudstream.model.ensemble import EnsembleSpec, Thresholds
from fraudstream.model.errors import ModelLoadError
from fraudstream.model.feature_spec import FeatureSpecDoc

ENSEMBLE_FILE = "ensemble.json"
FEATURE_SPEC_FILE = "feature_spec.json"
ORT_ERROR_ONLY = 3  # onnxruntime severity: 0 verbose .. 3 error, 4 fatal
_Doc = TypeVar("_Doc", EnsembleSpec, FeatureSpecDoc)


def session_options(intra_op_num_threads: int = 1) -> ort.SessionOptions:
    """Quiet, single-batch-friendly ONNX Runtime options (no per-call log lines)."""
    options = ort.SessionOptions()
    options.log_severity_level = ORT_ERROR_ONLY
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _read_json_model(path: Path, kind: type[_Doc]) -> _Doc:
    try:
        return kind.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise ModelLoadError(
            f"cannot read {path}: {exc}; is this a model version directory?"
        ) from exc


class OnnxEnsemble:
    """A loaded model version: `predict(X)` gives calibrated scores and member scores."""

    def __init__(
        self,
        spec: EnsembleSpec,
        feature_spec: FeatureSpecDoc,
        sessions: dict[str, ort.InferenceSession],
        version_dir: Path,
    ) -> None:
        self.spec = spec
        self.feature_spec = feature_spec
        self.version_dir = version_dir
        self._sessions = sessions

    @classmethod
    def load(cls, version_dir: str | Path, *, intra_op_num_threads: int = 1) -> OnnxEnsemble:
        """Load `ensemble.json`, `feature_spec.json` and each member's ONNX file."""
        root = Path(version_dir)
        spec = _read_json_model(root / ENSEMBLE_FILE, EnsembleSpec)
        feature_spec = _read_json_model(root / FEATURE_SPEC_FILE, FeatureSpecDoc)
        if len(feature_spec.names) != spec.n_features:
            raise ModelLoadError(f"{root}: feature_spec.json and ensemble.json disagree on width")
        options = session_options(intra_op_num_threads)
        sessions = {}
        for member in spec.members:
            try:
                sessions[member.name] = ort.InferenceSession(
                    str(root / member.file), options, providers=["CPUExecutionProvider"]
                )
            except Exception as exc:  # onnxruntime raises its own untyped errors
                raise ModelLoadError(f"cannot load {root / member.file}: {exc}") from exc
        return cls(spec, feature_spec, sessions, root)

    @property
    def version(self) -> str:
        """The version id (the directory's name)."""
        return self.version_dir.name

    @property
    def thresholds(self) -> Thresholds:
        """Review and decline thresholds on the calibrated score."""
        return self.spec.thresholds

    @property
    def feature_names(self) -> list[str]:
        """Column order `predict` expects."""
        return list(self.feature_spec.names)

    def predict_raw(self, X: np.ndarray) -> dict[str, np.ndarray]:
        """Each member's ONNX P(fraud) (float32), one `run()` per member for the batch."""
        if X.ndim != 2 or X.shape[1] != self.spec.n_features:
            raise ModelLoadError(
                f"expected a 2-D batch with {self.spec.n_features} feature columns in "
                f"feature_spec order, got shape {X.shape}"
            )
        batch = np.ascontiguousarray(X, dtype=np.float32)
        raw = {}
        for member in self.spec.members:
            (probabilities,) = self._sessions[member.name].run(
                [member.output], {self.spec.input_name: batch}
            )
            raw[member.name] = np.asarray(probabilities)[:, 1]
        return raw

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Calibrated ensemble scores and per-member calibrated probabilities (float64)."""
        if len(X) == 0:
            empty = np.zeros(0, dtype=np.float64)
            return empty, {m.name: empty for m in self.spec.members}
        return self.spec.apply(self.predict_raw(X))

    def disagreement(self, members: dict[str, np.ndarray]) -> np.ndarray:
        """True where members disagree by more than the margin (such rows go to review)."""
        return self.spec.disagreement(members)
