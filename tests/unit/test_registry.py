"""Model registry: immutable versions, stages with history, compare, model card, CLI."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fraudstream.contracts.messages import ModelEventType
from fraudstream.model.train_config import LightGBMParams, TrainConfig
from fraudstream.registry import ChecksumError, ModelNotFoundError, Registry, RegistryError, Stage
from fraudstream.registry.cli import models
from fraudstream.training.data import TrainingData, chronological_split
from fraudstream.training.publish import register
from fraudstream.training.synthetic import synthetic_training_data
from fraudstream.training.train import TrainResult, train

NAME = "card-fraud"
SMALL = TrainConfig(
    seed=1,
    lightgbm=LightGBMParams(
        num_leaves=15, num_boost_round=60, early_stopping_rounds=15, min_child_samples=20
    ),
    parity_rows=300,
)
FILES = {
    "lightgbm.onnx",
    "logreg.onnx",
    "lightgbm.txt",
    "ensemble.json",
    "feature_spec.json",
    "reference.json",
    "metrics.json",
    "training.json",
    "MODEL_CARD.md",
    "pr_curve.png",
    "manifest.json",
}


@pytest.fixture(scope="module")
def data() -> TrainingData:
    return synthetic_training_data(15_000, n_features=10, seed=9)


@pytest.fixture(scope="module")
def results(data: TrainingData) -> Iterator[tuple[TrainResult, TrainResult]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRAUD_GIT_COMMIT", "test-commit")
        first = train(data, SMALL)
        second = train(
            data,
            SMALL.model_copy(
                update={"lightgbm": SMALL.lightgbm.model_copy(update={"num_leaves": 7})}
            ),
        )
        yield first, second


def _ticking_clock() -> Callable[[], datetime]:
    now = [datetime(2025, 3, 1, 12, 0, tzinfo=UTC)]

    def clock() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    return clock


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models", clock=_ticking_clock())


def test_register_then_list_and_show(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    version = register(registry, NAME, results[0])
    assert re.fullmatch(r"v20250301-120001-[0-9a-f]{8}", version.version)
    assert version.stage is Stage.CANDIDATE
    assert {p.name for p in version.path.iterdir()} == FILES
    assert registry.list(NAME) == [version]
    assert registry.model_names() == [NAME]
    details = registry.show(NAME, version.version)
    assert details.ensemble == results[0].ensemble
    assert details.metrics.test == results[0].metrics.test
    assert set(details.metrics.parity) == {"lightgbm", "logreg", "ensemble"}
    assert details.training.windows[0].end < details.training.windows[1].start
    assert details.training.code_version.git_commit == "test-commit"
    (event,) = registry.events(NAME)
    assert event.event is ModelEventType.REGISTERED
    assert event.version == version.version
    assert registry.champion(NAME) is None


def test_versions_are_immutable(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    first = register(registry, NAME, results[0])
    for path in first.path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0, path.name
    again = register(registry, NAME, results[0])
    assert again.version != first.version
    assert [v.version for v in registry.list(NAME)] == [first.version, again.version]
    assert not list(first.path.parent.glob(".tmp-*"))
    registry.verify(NAME, first.version)
    target = again.path / "ensemble.json"
    target.chmod(0o644)
    target.write_text("{}")
    with pytest.raises(RegistryError, match="immutable"):
        registry.verify(NAME, again.version)


def _overwrite(path: Path, data: bytes) -> None:
    path.chmod(0o644)
    path.write_bytes(data)


def test_load_checks_the_manifest_checksums(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    version = register(registry, NAME, results[0]).version
    path = registry.get(NAME, version).path
    registry.load(NAME, version)
    onnx = path / "lightgbm.onnx"
    _overwrite(onnx, onnx.read_bytes()[:-16])  # truncated: the bytes ONNX Runtime would read
    with pytest.raises(ChecksumError, match=r"lightgbm\.onnx missing or not matching") as info:
        registry.load(NAME, version)
    assert info.value.files == ("lightgbm.onnx",)
    assert isinstance(info.value, RegistryError)
    (path / "lightgbm.txt").chmod(0o644)
    (path / "lightgbm.txt").unlink()
    with pytest.raises(ChecksumError) as info:
        registry.verify(NAME, version)
    assert info.value.files == ("lightgbm.onnx", "lightgbm.txt")


def test_verify_refuses_files_the_manifest_does_not_list(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    version = register(registry, NAME, results[0])
    (version.path / "notes.txt").write_text("x")
    registry.load(NAME, version.version)  # serving reads only listed files
    with pytest.raises(RegistryError, match=r"does not list \(\['notes.txt'\]\)"):
        registry.verify(NAME, version.version)


def test_an_unknown_model_is_model_not_found(registry: Registry) -> None:
    with pytest.raises(ModelNotFoundError, match="train and register one first"):
        registry.list(NAME)


def test_promote_and_rollback(registry: Registry, results: tuple[TrainResult, TrainResult]) -> None:
    v1, v2, v3 = (register(registry, NAME, results[i % 2]).version for i in range(3))
    first = registry.set_stage(NAME, v1, "champion", actor="alice")
    assert (first.event, first.version, first.actor) == (ModelEventType.PROMOTED, v1, "alice")
    shadow = registry.set_stage(NAME, v2, Stage.SHADOW, actor="alice")
    assert shadow.event is ModelEventType.SHADOW
    with pytest.raises(RegistryError, match="already in shadow"):
        registry.set_stage(NAME, v3, Stage.SHADOW, actor="alice")
    canary = registry.set_stage(NAME, v2, Stage.CANARY, canary_share=0.1, actor="bob")
    assert canary.event is ModelEventType.CANARY
    assert canary.canary_share == 0.1
    assert registry.get(NAME, v2).canary_share == 0.1
    promoted = registry.set_stage(NAME, v2, Stage.CHAMPION, actor="bob")
    assert promoted.event is ModelEventType.PROMOTED
    assert registry.champion(NAME).version == v2  # type: ignore[union-attr]
    assert registry.get(NAME, v1).stage is Stage.RETIRED
    back = registry.rollback(NAME, actor="carol")
    assert (back.event, back.version) == (ModelEventType.ROLLED_BACK, v1)
    assert v2 in back.note
    assert registry.champion(NAME).version == v1  # type: ignore[union-attr]
    assert registry.get(NAME, v2).stage is Stage.RETIRED
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(NAME, actor="carol")
    kinds = [e.event.value for e in registry.events(NAME)]
    assert kinds[3:] == [
        "promoted",
        "shadow",
        "canary",
        "retired",
        "promoted",
        "retired",
        "rolled_back",
    ]
    stored = json.loads((registry.root / NAME / "stages.json").read_text())
    assert stored["champions"] == [v1]


def test_stage_errors_say_what_to_do(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    v1 = register(registry, NAME, results[0]).version
    with pytest.raises(RegistryError, match="canary_share"):
        registry.set_stage(NAME, v1, Stage.CANARY, actor="alice")
    with pytest.raises(RegistryError, match="canary_share"):
        registry.set_stage(NAME, v1, Stage.SHADOW, canary_share=0.5, actor="alice")
    with pytest.raises(RegistryError, match="stage must be one of"):
        registry.set_stage(NAME, v1, Stage.CANDIDATE, actor="alice")
    with pytest.raises(RegistryError, match="known: v"):
        registry.set_stage(NAME, "v20000101-000000-00000000", Stage.SHADOW, actor="alice")
    with pytest.raises(RegistryError, match="actor"):
        registry.set_stage(NAME, v1, Stage.SHADOW, actor="not an id!")
    registry.set_stage(NAME, v1, Stage.CHAMPION, actor="alice")
    with pytest.raises(RegistryError, match="is the champion"):
        registry.set_stage(NAME, v1, Stage.RETIRED, actor="alice")
    with pytest.raises(RegistryError, match="no model 'other'"):
        registry.list("other")
    with pytest.raises(RegistryError, match="invalid model name"):
        register(registry, "../escape", results[0])
    with pytest.raises(RegistryError, match="invalid actor"):
        register(registry, NAME, results[0], actor="two words")
    assert len(registry.list(NAME)) == 1  # nothing was written


def _test_window(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    split = chronological_split(data.event_time, SMALL.split_fractions)
    return data.X[split.test], data.y[split.test]


def test_compare_scores_both_versions_on_the_same_window(
    registry: Registry, results: tuple[TrainResult, TrainResult], data: TrainingData
) -> None:
    a, b = (register(registry, NAME, r).version for r in results)
    X, y = _test_window(data)
    comparison = registry.compare(NAME, a, b, X, y)
    assert (comparison.rows, comparison.frauds) == (len(y), int(y.sum()))
    for version, result in zip((a, b), results, strict=True):
        ensemble = comparison.metrics[version]["ensemble"]
        expected = result.metrics.test["ensemble"]
        assert ensemble.auprc == pytest.approx(expected.auprc, abs=1e-3)
        assert set(comparison.metrics[version]) == {"lightgbm", "logreg", "ensemble"}
    table = comparison.table()
    assert a in table
    assert b in table
    assert "| AUPRC |" in table
    same = registry.compare(NAME, a, a, X, y)
    assert same.delta("auprc") == 0.0
    with pytest.raises(RegistryError, match="0/1 labels"):
        registry.compare(NAME, a, b, X, y[:-1])


def test_model_card_and_pr_curve(
    registry: Registry, results: tuple[TrainResult, TrainResult]
) -> None:
    version = register(registry, NAME, results[0])
    card = (version.path / "MODEL_CARD.md").read_text()
    thresholds = results[0].ensemble.thresholds
    for needle in (
        version.version,
        "## Intended use",
        "## Thresholds",
        f"{thresholds.decline:.6f}",
        f"{thresholds.review:.6f}",
        "review budget",
        "## Class imbalance",
        "| ensemble |",
        "AUPRC",
        "recall@0.1%FPR",
        "## ONNX parity",
        "## Limitations",
    ):
        assert needle in card, needle
    png = (version.path / "pr_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 5_000


def test_cli(
    registry: Registry, results: tuple[TrainResult, TrainResult], data: TrainingData, tmp_path: Path
) -> None:
    a, b = (register(registry, NAME, r).version for r in results)
    # Hermetic: a local stack running in the working directory would get the events.
    runner = CliRunner(env={"FRAUD_STATE_DIR": str(tmp_path / "no-stack")})

    def run(*args: str) -> str:
        outcome = runner.invoke(models, ["--registry", str(registry.root), *args])
        assert outcome.exit_code == 0, outcome.output
        return outcome.stdout  # stage changes also say on stderr whether Kafka got the event

    assert NAME in run("list")
    assert a in run("list", NAME)
    assert "candidate" in run("list", NAME)
    assert "decline >=" in run("show", NAME, a)
    assert json.loads(run("show", NAME, a, "--json"))["version"]["version"] == a
    X, y = _test_window(data)
    np.savez(tmp_path / "window.npz", X=X, y=y)
    assert "B - A" in run("compare", NAME, a, b, "--data", str(tmp_path / "window.npz"))
    assert json.loads(run("promote", NAME, a, "--actor", "alice"))["event"] == "promoted"
    canary = json.loads(run("promote", NAME, b, "--stage", "canary", "--share", "0.2"))
    assert canary["canary_share"] == 0.2
    run("promote", NAME, b)
    assert json.loads(run("rollback", NAME))["version"] == a
    assert json.loads(run("promote", NAME, b, "--stage", "shadow"))["event"] == "shadow"
    assert json.loads(run("retire", NAME, b))["event"] == "retired"
    lines = run("history", NAME).splitlines()
    assert lines[0] == "at (UTC)\tevent\tversion\tactor\tnote"
    assert [line.split("\t")[1:3] for line in lines[1:4]] == [
        ["registered", a],
        ["registered", b],
        ["promoted", a],
    ]
    assert "canary (0.2 of cards)" in lines[4]
    assert lines[-1].split("\t")[1:4] == ["retired", b, "operator"]
    assert all(f"\t{b}\t" in line for line in run("history", NAME, "--version", b).splitlines()[1:])
    events = json.loads(run("history", NAME, "--version", b, "--json"))
    assert events[0]["event"] == "registered"
    assert {e["version"] for e in events} == {b}
    assert {v["version"]: v["stage"] for v in json.loads(run("list", NAME, "--json"))} == {
        a: "champion",
        b: "retired",
    }
    assert json.loads(run("list", "--json")) == [{"model_name": NAME, "champion": a}]
    assert "evaluation" not in run("show", NAME, b)
    registry.record_evaluation(NAME, b, json.dumps({
        "window_start": "2026-03-01T00:00:00Z", "window_end": "2026-03-08T00:00:00Z",
        "challenger": {"version": b, "decisions": 5000, "recall": 0.61,
                       "decline_precision": 0.8, "review_rate": 0.01},
        "champion": None, "recall_difference": None,
    }))  # fmt: skip
    assert (f"evaluation 2026-03-01..2026-03-08 (5,000 transactions): challenger {b}: recall "
            "0.610") in run("show", NAME, b)  # fmt: skip
    failed = runner.invoke(models, ["--registry", str(registry.root), "rollback", NAME])
    assert failed.exit_code == 1
    assert "no earlier champion" in failed.output
    env = runner.invoke(models, ["list"], env={"FRAUD_REGISTRY_DIR": str(registry.root)})
    assert NAME in env.output
