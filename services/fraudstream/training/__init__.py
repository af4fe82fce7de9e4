"""Model training and ONNX export (the `train` extra: scikit-learn, skl2onnx, onnxmltools).

Serving never imports this package; what training and serving share (the artifact format,
ONNX runtime, explainer, metrics) lives in `fraudstream.model`. Modules:

- `data`: `TrainingData` and the chronological split.
- `train`: `train(data, config) -> TrainResult`.
- `members`, `calibration`, `thresholds`: fitting the members, combiner and thresholds.
- `export`: ONNX export with the parity check.
"""
