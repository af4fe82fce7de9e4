"""The alert rules and their routing: `promtool test rules` (each alert fires on its fault
after its `for:` and stays quiet without it), every alert's severity, `for:` and runbook,
and Alertmanager's routes checked with `amtool`. promtool and amtool come from Debian's
`prometheus` and `prometheus-alertmanager` packages (.ci/run installs them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.metric_names import exported, unknown

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules" / "fraudstream.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests" / "fraudstream_test.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
RECEIVER_OF = {"critical": "page", "warning": "ticket"}


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install {package} (.ci/run does)")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = _tool("promtool", "prometheus")
    checked = _run(promtool, "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_prometheus_config_passes_promtool() -> None:
    promtool = _tool("promtool", "prometheus")
    checked = _run(promtool, "check", "config", str(RULES.parents[1] / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_severity_for_runbook_and_a_test() -> None:
    alerts = _alerts()
    assert len(alerts) >= 10
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}  # fmt: skip
    for alert in alerts:
        name = alert["alert"]
        assert alert["labels"]["severity"] in RECEIVER_OF, name
        assert alert.get("for"), f"{name} has no for:"
        assert alert["annotations"]["summary"], name
        runbook = alert["annotations"]["runbook_url"]
        assert runbook == f"docs/runbooks/{name}.md", name
        assert (REPO / runbook).is_file(), f"{name}: {runbook} is missing"
        assert name in tested, f"{name} has no promtool test where it fires"
    documented = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert documented == {a["alert"] for a in alerts}, "a runbook without an alert, or vice versa"


def test_runbooks_have_the_four_sections() -> None:
    for path in RUNBOOKS.glob("Fraud*.md"):
        text = path.read_text()
        for section in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert section in text, f"{path.name} lacks {section}"


def test_alertmanager_config_and_routing() -> None:
    amtool = _tool("amtool", "prometheus-alertmanager")
    checked = _run(amtool, "check-config", str(ALERTMANAGER))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for alert in _alerts():
        severity = alert["labels"]["severity"]
        routed = _run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                      f"alertname={alert['alert']}", f"severity={severity}")  # fmt: skip
        assert routed.stdout.strip() == RECEIVER_OF[severity], (alert["alert"], routed.stdout)
    unrouted = _run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", "x=y")
    assert unrouted.stdout.strip() == "default"


def test_alerts_query_only_metrics_the_services_export() -> None:
    names = exported()
    for alert in _alerts():
        assert not unknown(alert["expr"], names), (alert["alert"], unknown(alert["expr"], names))
