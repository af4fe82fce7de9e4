"""`fraudctl drift status`: the monitor's gauges read back into a per-detector table."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from fraudstream.cli import cli
from fraudstream.drift.config import MonitorConfig
from fraudstream.drift.join import APPROVE, Seen
from fraudstream.drift.monitor import Monitor, Observed
from fraudstream.drift.service import DriftMetrics, DriftSettings, build_app
from fraudstream.drift.status import parse, render
from fraudstream.json_output import echo_json
from fraudstream.model.drift_reference import Distribution, DriftReference


def _metrics_after_a_shift() -> str:
    rng = np.random.default_rng(3)
    training = rng.normal(3.0, 1.0, 20_000)
    reference = DriftReference(
        rows=20_000, score=Distribution.of(rng.beta(1, 200, 20_000)),
        features={"amount_log": Distribution.of(training)},
        score_mean=0.005, decline_rate=0.002, review_rate=0.004, miss_rate=0.1,
    )  # fmt: skip
    monitor, metrics = Monitor(MonitorConfig(), lambda _version: reference), DriftMetrics()
    for batch in range(40):  # 20,000 decisions, amounts x2 after the first 10,000
        shift = 0.7 if batch >= 20 else 0.0
        fed = monitor.on_decisions([
            Observed(Seen(f"tx-{batch}-{i}", 1_700_000_000.0 + batch * 60 + i * 0.1, "v1",
                          float(rng.beta(1, 200)), APPROVE),
                     {"amount_log": float(rng.normal(3.0 + shift, 1.0))})
            for i in range(500)
        ])  # fmt: skip
        metrics.update(monitor, fed)
    return generate_latest(metrics.registry).decode()


def test_status_lists_every_detector_with_its_last_alarm() -> None:
    rows = parse(_metrics_after_a_shift())
    by_name = {(r.detector, r.feature): r for r in rows}
    amount = by_name[("feature_psi", "amount_log")]
    assert amount.drifted == 1.0
    assert amount.value > amount.threshold == pytest.approx(0.25)
    assert amount.events == 20_000
    assert amount.last_alarm_at is not None
    assert by_name[("score_psi", "")].last_alarm_at is None
    assert {r.model_version for r in rows} == {"v1"}
    table = render(rows).splitlines()
    assert table[0].startswith("model version\tdetector\tfeature\tstatistic")
    line = next(t for t in table if "\tamount_log\t" in t)
    assert "\tDRIFTED\t" in line
    alarm = datetime.fromtimestamp(amount.last_alarm_at, UTC)
    assert line.endswith(f"\t{alarm:%Y-%m-%d %H:%M:%S}")
    assert table[-1] == f"1 of {len(rows)} detectors drifted"


def test_status_says_when_nothing_was_seen_or_the_monitor_is_down() -> None:
    assert "no ML decision yet" in render(parse(generate_latest(DriftMetrics().registry).decode()))
    result = CliRunner().invoke(cli, ["drift", "status", "--url", "http://127.0.0.1:9/metrics"])
    assert result.exit_code == 1
    assert "does not answer at http://127.0.0.1:9/metrics" in result.output


def test_the_monitor_keeps_faust_data_under_the_state_dir(tmp_path: Path) -> None:
    """faust's default data directory is `<group>-data` in the working directory."""
    settings = DriftSettings(
        state_dir=tmp_path / "state", registry_dir=tmp_path / "models",
        kafka_bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:1",
    )  # fmt: skip
    app, _, _ = build_app(settings)
    assert Path(app.conf.datadir) == tmp_path / "state" / "drift" / settings.drift_group_id
    app._create_directories()  # what the worker does at start: the parents must exist
    assert (Path(app.conf.datadir) / "v1" / "tables").is_dir()


def test_status_rows_as_json_have_nulls_for_missing_statistics(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = parse(_metrics_after_a_shift())
    echo_json(rows)
    printed = json.loads(capsys.readouterr().out)
    by_name = {(r["detector"], r["feature"]): r for r in printed}
    amount = by_name[("feature_psi", "amount_log")]
    assert amount["drifted"] == 1.0
    assert amount["value"] > amount["threshold"]
    assert len(printed) == len(rows)
    assert all(r["value"] is None for r, row in zip(printed, rows, strict=True)
               if math.isnan(row.value))  # fmt: skip
