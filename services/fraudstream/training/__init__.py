"""Model training, ONNX export and serving of the fraud ensemble.

Modules (import from them directly; this package imports nothing so the scorer does not
pay for scikit-learn when it only needs ONNX Runtime):

- `data`: `FeatureSpecDoc`, `TrainingData` and the chronological split.
- `config`: `TrainConfig`.
- `train`: `train(data, config) -> TrainResult`.
- `ensemble`: the combiner, calibrator and thresholds as tiny numpy-applicable parameters.
- `export`: ONNX export with the parity check; `onnx_ensemble.OnnxEnsemble` serves it.
- `explain`: per-row LightGBM feature contributions.
- `metrics`: evaluation metrics in plain numpy.
"""
