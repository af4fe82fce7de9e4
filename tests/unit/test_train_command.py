"""`fraudctl train` end to end: simulated data and a user-supplied labelled file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from pyarrow import csv

from fraudstream.cli import cli
from fraudstream.errors import ConfigurationError
from fraudstream.features.pipeline import FeaturePipeline, replay
from fraudstream.model.feature_spec import FeatureSpecDoc, feature_spec_of
from fraudstream.model.train_config import LightGBMParams, TrainConfig, train_config
from fraudstream.registry import Registry, Stage
from fraudstream.simulator import SimulationConfig, simulate, write
from fraudstream.trainer import simulated_history

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_GIT_COMMIT", "test")


def _train(args: list[str]) -> str:
    result = CliRunner().invoke(cli, ["train", *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_train_on_simulated_data_registers_a_champion_with_a_card(tmp_path: Path) -> None:
    registry = tmp_path / "models"
    output = _train(["--simulate", "30000", "--days", "20", "--registry", str(registry),
                     "--features", str(REPO / "config" / "features.yaml")])  # fmt: skip
    assert "registered fraud" in output
    assert "(champion)" in output
    # Progress as each stage ends (on stderr), then the summary.
    stages = ("load", "features", "train", "export_and_register")
    assert all(f"  {stage} done in " in output for stage in stages), output
    (version,) = Registry(registry).list("fraud")
    assert version.stage is Stage.CHAMPION
    card = (version.path / "MODEL_CARD.md").read_text()
    assert "## Thresholds" in card
    assert (version.path / "pr_curve.png").stat().st_size > 1000
    spec = FeatureSpecDoc.model_validate_json((version.path / "feature_spec.json").read_text())
    assert spec.names[-1] == "producer_auth_3ds"
    metrics = json.loads((version.path / "metrics.json").read_text())
    assert metrics["test"]["ensemble"]["auprc"] > 0.3  # far above the ~0.4 % base rate

    # The stored spec rebuilds the very pipeline that produced the training features.
    history = simulated_history(SimulationConfig(seed=3, n_transactions=2000, days=2))
    rebuilt = FeaturePipeline(feature_spec_of(spec))
    ensemble = Registry(registry).load("fraud", version.version)
    scores, members = ensemble.predict(replay(rebuilt, history.transactions, history.labels))
    assert scores.shape == (2000,)
    assert set(members) == {"lightgbm", "logreg"}
    assert np.all((scores >= 0) & (scores <= 1))

    second = _train(["--simulate", "30000", "--days", "20", "--seed", "8",
                     "--registry", str(registry)])  # fmt: skip
    assert "(candidate)" in second  # a champion exists: new versions wait for promotion
    skipped = _train(["--unless-champion", "--registry", str(registry)])
    assert skipped.strip() == f"fraud has a champion ({version.version}): nothing to train"
    assert len(Registry(registry).list("fraud")) == 2

    window = simulate(SimulationConfig(seed=9, n_transactions=5000, days=5))
    tx_file, _ = write(window, tmp_path / "window", "parquet")
    a, b = (v.version for v in Registry(registry).list("fraud"))
    compared = CliRunner().invoke(
        cli,
        ["models", "--registry", str(registry), "compare", "fraud", a, b, "--data", str(tx_file)],
    )
    assert compared.exit_code == 0, compared.output
    assert "AUPRC" in compared.output
    assert "5000 rows" in compared.output


def test_train_on_a_user_supplied_csv_file(tmp_path: Path) -> None:
    sim = simulate(SimulationConfig(seed=5, n_transactions=30_000, days=20))
    table = sim.transactions.drop_columns(["scenario"])
    table = table.set_column(
        table.schema.get_field_index("is_fraud"),
        "label",
        pc.if_else(table["is_fraud"], "fraud", "legit"),
    )
    amounts = table["amount"].to_numpy().copy()
    amounts[:3] = 0.0  # zero-amount authorisations: refused by the contract, and counted
    table = table.set_column(table.schema.get_field_index("amount"), "amount", pa.array(amounts))
    data = tmp_path / "history.csv"
    csv.write_csv(table, data)
    output = _train(["--data", str(data), "--label-column", "label", "--label-delay-days", "20",
                     "--registry", str(tmp_path / "models"), "--name", "acme"])  # fmt: skip
    assert "29997 transactions" in output
    assert "skipped 3 invalid rows: schema_violation" in output
    (version,) = Registry(tmp_path / "models").list("acme")
    card = (version.path / "MODEL_CARD.md").read_text()
    assert "Input rows refused by the contract and left out: 3 (schema_violation: 3)." in card
    labels_files = write(sim, tmp_path / "files", "jsonl")
    assert labels_files[1].exists()


def test_a_training_config_file_is_read_and_options_win_over_it(tmp_path: Path) -> None:
    assert train_config(REPO / "config" / "train.yaml") == TrainConfig(seed=7)
    path = tmp_path / "train.yaml"
    path.write_text("review_budget: 0.01\nlightgbm: {early_stopping_rounds: 100}\n")
    config = train_config(path, decline_precision=0.8)
    assert (config.review_budget, config.target_decline_precision) == (0.01, 0.8)
    assert config.lightgbm.early_stopping_rounds == 100
    assert config.lightgbm.num_boost_round == LightGBMParams().num_boost_round
    path.write_text("lightgbm: {early_stoping_rounds: 100}\n")  # a typo is refused
    with pytest.raises(ConfigurationError, match=r"train.yaml.*early_stoping_rounds"):
        train_config(path)


def test_a_train_window_warms_state_on_earlier_rows_and_leaves_out_immature_ones(
    tmp_path: Path,
) -> None:
    registry = tmp_path / "models"
    output = _train(["--simulate", "30000", "--days", "20", "--registry", str(registry),
                     "--train-from", "2026-01-10", "--train-to", "2026-01-23",
                     "--mature-days", "2"])  # fmt: skip
    (version,) = Registry(registry).list("fraud")
    info = json.loads((version.path / "training.json").read_text())
    starts = [w["start"] for w in info["windows"]]
    ends = [w["end"] for w in info["windows"]]
    assert min(starts) >= "2026-01-10"
    assert max(ends) < "2026-01-21"
    assert info["warmup_rows"] > 0
    assert info["immature_rows"] > 0
    assert f"{info['warmup_rows']} rows warmed state only" in output
    assert "warmed on" in (version.path / "MODEL_CARD.md").read_text()
