"""The model artifact, shared by training and serving: what a model version holds and how
it runs. Needs only numpy, pydantic, onnxruntime and lightgbm (no scikit-learn, no ONNX
converters), so the scorer, monitor and registry import it from a plain install.

Modules (import from them directly):

- `feature_spec`: `FeatureSpecDoc` (`feature_spec.json`), the model's input columns.
- `ensemble`: the combiner, calibrator and thresholds as tiny numpy-applicable parameters
  (`ensemble.json`), and the decline/review masks.
- `onnx_ensemble`: `OnnxEnsemble`, the ONNX Runtime serving path.
- `explain`: per-row LightGBM feature contributions.
- `metrics`: evaluation metrics in plain numpy (`metrics.json`).
- `drift_reference`: the score and feature distributions the drift monitor compares
  against (`reference.json`).
- `provenance`, `train_config`: where a version came from (`training.json`).
"""
