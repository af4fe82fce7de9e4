"""Registering a trained model: its ONNX export (with the parity check), metrics, training
record, model card and PR curves, sealed by the registry as one immutable version."""

from __future__ import annotations

from pathlib import Path

from fraudstream.model.metrics import ParityResult
from fraudstream.registry import ModelVersion, Registry
from fraudstream.registry.layout import CARD_FILE, METRICS_FILE, PR_CURVE_FILE, TRAINING_FILE
from fraudstream.training.card import plot_pr_curves, render_model_card
from fraudstream.training.export import ParityBounds, export_onnx
from fraudstream.training.train import TrainResult


def register(
    registry: Registry,
    name: str,
    result: TrainResult,
    *,
    actor: str = "trainer",
    note: str = "",
    parity_bounds: ParityBounds | None = None,
) -> ModelVersion:
    """Export, document and store `result` as a new immutable candidate version of `name`."""
    parity: dict[str, ParityResult] = {}

    def write_serving(tmp: Path) -> None:
        parity.update(export_onnx(result, tmp, parity_bounds))

    def write_documents(tmp: Path, version: str) -> None:
        _write_documents(tmp, name, version, result, parity)

    return registry.add_version(name, write_serving, write_documents, actor=actor, note=note)


def _write_documents(
    tmp: Path, name: str, version: str, result: TrainResult, parity: dict[str, ParityResult]
) -> None:
    """metrics.json (with parity), training.json, the model card and the PR curves."""
    metrics = result.metrics.model_copy(update={"parity": parity})
    (tmp / METRICS_FILE).write_text(metrics.model_dump_json(indent=2) + "\n")
    (tmp / TRAINING_FILE).write_text(result.info.model_dump_json(indent=2) + "\n")
    card = render_model_card(
        name=name,
        version=version,
        info=result.info,
        metrics=metrics,
        ensemble=result.ensemble,
        spec=result.feature_spec,
    )
    (tmp / CARD_FILE).write_text(card)
    plot_pr_curves(
        result.test_labels, result.test_scores, tmp / PR_CURVE_FILE, f"{name} {version} (test)"
    )
