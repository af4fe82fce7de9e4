"""The operator CLI's offline commands."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import fraudstream
from fraudstream.cli import cli
from fraudstream.contracts import CONTRACTS
from fraudstream.features.spec import catalog
from fraudstream.settings import get_settings
from fraudstream.topics import TOPICS


def test_schemas_export_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = runner.invoke(cli, ["schemas", "export", "--check", "--dir", str(tmp_path)])
    assert stale.exit_code == 1
    assert "fraudctl schemas export" in stale.output
    wrote = runner.invoke(cli, ["schemas", "export", "--dir", str(tmp_path)])
    assert wrote.exit_code == 0
    assert len(list(tmp_path.glob("*.schema.json"))) == len(CONTRACTS)
    checked = runner.invoke(cli, ["schemas", "export", "--check", "--dir", str(tmp_path)])
    assert checked.exit_code == 0, checked.output


def test_topics_list_prints_the_table() -> None:
    result = CliRunner().invoke(cli, ["topics", "list"])
    assert result.exit_code == 0
    assert "`transactions.dlq`" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"fraudctl, version {fraudstream.__version__}\n"


def test_read_commands_print_json() -> None:
    topics = json.loads(CliRunner().invoke(cli, ["topics", "list", "--json"]).output)
    assert [t["topic"] for t in topics] == [spec.name(get_settings()) for spec in TOPICS]
    dlq = next(t for t in topics if t["topic"] == "transactions.dlq")
    assert dlq["contract"] == "DeadLetter"
    assert dlq["keyed"] is False
    features = json.loads(CliRunner().invoke(cli, ["features", "list", "--json"]).output)
    assert features == list(catalog())


def test_status_json_masks_the_redis_password(tmp_path: Path) -> None:
    env = {"FRAUD_STATE_DIR": str(tmp_path), "REDIS_URL": "redis://:hunter2@redis:6379/0"}
    result = CliRunner().invoke(cli, ["status", "--json"], env=env)
    assert result.exit_code == 0
    assert json.loads(result.output) == {
        "started": False, "kafka": None, "redis": None,
        "kafka_bootstrap_servers_override": None,
        "redis_url_override": "redis://:***@redis:6379/0",
    }  # fmt: skip


def test_status_without_a_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status"], env={"FRAUD_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0
    assert "not started" in result.output


def test_status_masks_the_redis_password(tmp_path: Path) -> None:
    env = {"FRAUD_STATE_DIR": str(tmp_path), "REDIS_URL": "redis://:hunter2@redis:6379/0"}
    result = CliRunner().invoke(cli, ["status"], env=env)
    assert result.exit_code == 0
    assert "REDIS_URL overrides: redis://:***@redis:6379/0" in result.output
    assert "hunter2" not in result.output


def test_rules_check_lists_a_valid_pack_and_refuses_a_broken_one(tmp_path: Path) -> None:
    pack = Path(__file__).resolve().parents[2] / "config" / "rules.yaml"
    result = CliRunner().invoke(cli, ["rules", "check", str(pack)])
    assert result.exit_code == 0, result.output
    assert "ALLOWLIST_CARD" in result.output
    rules = pack.read_text().count("\n  - id: ")
    assert f"{rules} enabled of {rules}" in result.output
    broken = tmp_path / "rules.yaml"
    broken.write_text("version: v1\nrules:\n  - id: X\n    action: explode\n")
    result = CliRunner().invoke(cli, ["rules", "check", str(broken)])
    assert result.exit_code != 0
    assert "invalid rule pack" in str(result.exception)
