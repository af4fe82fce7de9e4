"""The drift monitor: River detectors on decisions and labels, retraining triggers.

`reference` (what a model version is compared against, written by training), `config`,
`detectors`, `join` (labels to decisions) and `monitor` are pure; `service` runs them
as a faust-streaming app on `fraud.decisions` and `fraud.labels`.
"""
