"""`fraudctl evaluate` through the serving path reproduces the model card's test metrics on
the same window (the registry only; no broker)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from fraudstream.cli import cli
from fraudstream.history import evaluate
from fraudstream.registry import Registry
from fraudstream.scoring.models import single_model_set
from fraudstream.simulator import SimulationConfig
from fraudstream.trainer import simulated_history_and_scenarios

pytestmark = pytest.mark.integration
SMALL_HISTORY = SimulationConfig(seed=21, n_transactions=12_000, days=10)  # scorer_support's


def test_evaluate_reproduces_the_model_cards_test_metrics(small_registry: Path) -> None:
    registry = Registry(small_registry)
    champion = registry.champion("fraud")
    assert champion is not None
    details = registry.show("fraud", champion.version)
    test_window = next(w for w in details.training.windows if w.name == "test")
    history, scenarios = simulated_history_and_scenarios(SMALL_HISTORY)
    result = evaluate.run(
        history, single_model_set(registry, "fraud", "champion"), test_window.start,
        test_window.end + timedelta(microseconds=1), groups=scenarios,
    )  # fmt: skip
    card, got = details.metrics.test["ensemble"], result.metrics
    assert (got.rows, got.frauds) == (card.rows, card.frauds) == (test_window.rows,
                                                                  test_window.frauds)  # fmt: skip
    # The card scores with native LightGBM and scikit-learn, serving with ONNX (float32):
    # rows tied at the calibrator's floor may untie, which moves the ranking metrics a bit.
    assert got.auprc == pytest.approx(card.auprc, abs=2e-3)
    assert got.roc_auc == pytest.approx(card.roc_auc, abs=2e-3)
    one_fraud = 1 / card.frauds + 1e-9
    assert got.recall_at_fpr_0_1pct == pytest.approx(card.recall_at_fpr_0_1pct, abs=one_fraud)
    assert got.review_rate == pytest.approx(card.review_rate, abs=1e-3)
    assert got.decline_rate == pytest.approx(card.decline_rate, abs=1e-3)
    assert sum(g["frauds"] for g in result.groups.values()) == test_window.frauds
    assert result.card_precision_at_100  # a value per day


def test_the_command_prints_json_and_writes_the_curve(small_registry: Path, tmp_path: Path) -> None:
    plot = tmp_path / "pr.png"
    run = CliRunner().invoke(
        cli, ["evaluate", "champion", "--simulate", "12000", "--days", "10", "--seed", "21",
              "--registry", str(small_registry), "--json", "--plot", str(plot)],
        catch_exceptions=False,
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    assert out["metrics"]["rows"] > 0
    assert 0.0 <= out["metrics"]["auprc"] <= 1.0
    assert plot.read_bytes()[:4] == b"\x89PNG"
