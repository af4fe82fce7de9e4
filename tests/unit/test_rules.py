"""Rule packs: schema validation, safe evaluation, precedence and hot reload."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from fraudstream.errors import ConfigurationError
from fraudstream.rules.context import RuleBatch
from fraudstream.rules.engine import RuleOutcome, RulePack, RuleSource
from fraudstream.rules.model import RuleAction
from tests.factories import transaction

REPO = Path(__file__).resolve().parents[2]
DEFAULT = RulePack.from_yaml((REPO / "config" / "rules.yaml").read_text())


def _ctx(
    features: dict[str, float] | None = None,
    lists: dict[tuple[str, str], frozenset[str]] | None = None,
    **tx: object,
) -> RuleBatch:
    return RuleBatch.of_dicts([transaction(**tx)], [features or {}], lists)


def _one(pack: RulePack, batch: RuleBatch) -> RuleOutcome:
    (outcome,) = pack.evaluate(batch)
    return outcome


def test_default_pack_loads() -> None:
    assert DEFAULT.version == "default-2026-11"
    assert len(DEFAULT) == 7


def test_ordinary_payment_matches_nothing() -> None:
    outcome = _one(DEFAULT, _ctx({"card_count_10m": 1.0, "card_speed_kmh": 20.0}))
    assert outcome.action is None
    assert outcome.hits == ()


def test_block_list_declines_and_allow_list_wins_when_first() -> None:
    blocked = _ctx(lists={("block", "merchant"): frozenset({"merch-1"})})
    outcome = _one(DEFAULT, blocked)
    assert outcome.action is RuleAction.DECLINE
    assert [h.reason for h in outcome.hits] == ["BLOCKLISTED"]
    both = _ctx(lists={("block", "merchant"): frozenset({"merch-1"}),
                       ("allow", "card"): frozenset({"card-0001"})})  # fmt: skip
    outcome = _one(DEFAULT, both)
    assert outcome.action is RuleAction.APPROVE
    assert [h.rule_id for h in outcome.hits] == ["ALLOWLIST_CARD", "BLOCKLIST_ENTITY"]


def test_card_testing_needs_both_conditions() -> None:
    assert _one(DEFAULT, _ctx({"card_count_10m": 6.0}, amount=1.0)).action is RuleAction.DECLINE
    assert _one(DEFAULT, _ctx({"card_count_10m": 6.0}, amount=50.0)).action is None
    assert _one(DEFAULT, _ctx({"card_count_10m": 2.0}, amount=1.0)).action is None


def test_missing_features_never_match() -> None:
    degraded = _ctx({"card_speed_kmh": math.nan, "card_distance_km": math.nan}, amount=1.0)
    assert _one(DEFAULT, degraded).hits == ()


def test_tags_add_reasons_without_deciding() -> None:
    features = {"card_new_device": 1.0, "card_count_30d": 4.0}
    outcome = _one(DEFAULT, _ctx(features, amount=900.0))
    assert outcome.action is None
    assert [h.reason for h in outcome.hits] == ["NEW_DEVICE_HIGH_AMOUNT"]
    over = _one(DEFAULT, _ctx(features, amount=20000.0))
    assert over.action is RuleAction.REVIEW
    assert [h.reason for h in over.hits] == ["AMOUNT_OVER_LIMIT", "NEW_DEVICE_HIGH_AMOUNT"]


def test_field_operators_and_enums() -> None:
    pack = RulePack.from_yaml("""
version: t
rules:
  - id: R1
    description: risky countries online
    when:
      all:
        - {field: country, op: in, value: [RO, BG]}
        - {field: channel, op: eq, value: ecommerce}
        - not: {field: card_present, op: eq, value: true}
    action: review
    reason: GEO
""")
    assert _one(pack, _ctx(country="RO", channel="ecommerce", card_present=False)).action
    assert _one(pack, _ctx(country="DE", channel="ecommerce", card_present=False)).action is None
    assert _one(pack, _ctx(country="RO", channel="pos", card_present=False)).action is None


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("{field: __class__, op: eq, value: 1}", "unknown field"),
        ("{feature: no_such, op: eq, value: 1}", "unknown feature"),
        ("{field: amount, op: eq, value: 1, extra: 2}", "Extra inputs"),
        ("{field: amount, op: in, value: 1}", "list value"),
        ("{field: amount, op: matches, value: 1}", "op"),
        ("{field: amount, op: gt, value: '1000'}", "compares with float"),
        ("{field: country, op: in, value: [DE, 1]}", "compares with str"),
        ("{feature: card_count_1h, op: eq, value: true}", "compares with float"),
        ('\'__import__("os").system("true")\'', "when"),
    ],
)
def test_invalid_rules_are_refused_at_load(snippet: str, message: str) -> None:
    text = (
        "version: t\nrules:\n  - id: BAD\n    description: x\n"
        f"    when: {snippet}\n    action: decline\n    reason: X\n"
    )
    with pytest.raises(ConfigurationError, match=message):
        RulePack.from_yaml(text)


def test_duplicate_ids_and_bad_yaml_are_refused() -> None:
    rule = (
        "  - {id: A, description: x, when: {field: amount, op: gt, value: 1},"
        " action: tag, reason: X}\n"
    )
    with pytest.raises(ConfigurationError, match="duplicate rule ids"):
        RulePack.from_yaml("version: t\nrules:\n" + rule + rule)
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        RulePack.from_yaml("version: [unclosed")


def test_source_reloads_on_change_and_keeps_the_last_good_pack(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text((REPO / "config" / "rules.yaml").read_text())
    source = RuleSource(path)
    assert not source.maybe_reload()
    path.write_text("version: v2\nrules: []\n")
    os.utime(path, ns=(1, 10**18))  # a distinct mtime even on coarse clocks
    assert source.maybe_reload()
    assert source.pack.version == "v2"
    path.write_text("version: v3\nrules: [{id: broken}]\n")
    os.utime(path, ns=(1, 2 * 10**18))
    assert not source.maybe_reload()
    assert source.pack.version == "v2"
    assert source.last_error is not None
    assert "invalid rule pack" in source.last_error


def test_source_reports_reloads_and_failures_to_its_callbacks(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: v1\nrules: []\n")
    loaded: list[str] = []
    failed: list[str] = []
    source = RuleSource(path, on_reload=loaded.append)
    source.on_reload_error = failed.append  # assignable after construction too
    path.write_text("version: v2\nrules: [{id: broken}]\n")
    os.utime(path, ns=(1, 10**18))
    assert not source.maybe_reload()
    assert not source.maybe_reload()  # the same broken edit is reported once
    assert loaded == []
    assert len(failed) == 1
    assert "invalid rule pack" in failed[0]
    path.unlink()
    for _ in range(3):  # checked every batch, reported once
        assert not source.maybe_reload()
    assert len(failed) == 2
    assert "rules.yaml" in failed[1]
    assert source.pack.version == "v1"
    path.write_text("version: v3\nrules: []\n")
    assert source.maybe_reload()
    assert loaded == ["v3"]
    assert source.last_error is None


def test_a_batch_is_evaluated_column_wise_with_one_outcome_per_event() -> None:
    txs = [transaction(transaction_id=f"tx-{i}", amount=a)
           for i, a in enumerate([1.0, 50.0, 20000.0, 3.0])]  # fmt: skip
    names = ["card_count_10m", "card_speed_kmh", "card_distance_km"]
    rows = np.array([
        [6.0, 10.0, 1.0],  # card testing: decline
        [9.0, math.nan, 400.0],  # velocity; unknown speed: no travel hit
        [1.0, 1000.0, 500.0],  # travel and the hard limit: the first decisive rule wins
        [1.0, 10.0, 1.0],  # nothing
    ])  # fmt: skip
    outcomes = DEFAULT.evaluate(RuleBatch(txs, rows, {n: i for i, n in enumerate(names)}))
    assert [o.action for o in outcomes] == [
        RuleAction.DECLINE, RuleAction.REVIEW, RuleAction.REVIEW, None,
    ]  # fmt: skip
    assert [[h.rule_id for h in o.hits] for o in outcomes] == [
        ["CARD_TESTING_BURST"], ["VELOCITY_10M"], ["IMPOSSIBLE_TRAVEL", "HARD_LIMIT"], [],
    ]  # fmt: skip
    assert DEFAULT.evaluate(RuleBatch([], np.empty((0, 3)), {})) == []


def test_features_not_computed_read_as_unknown_even_for_ne_and_not_in() -> None:
    pack = RulePack.from_yaml("""
version: t
rules:
  - {id: NE, description: x, when: {feature: card_count_1h, op: ne, value: 3}, action: tag,
     reason: NE}
  - {id: NOT_IN, description: x, when: {feature: card_count_1h, op: not_in, value: [1, 2]},
     action: tag, reason: NOT_IN}
""")
    assert _one(pack, _ctx({"card_count_10m": 1.0})).hits == ()  # card_count_1h missing
    assert _one(pack, _ctx({"card_count_1h": math.nan})).hits == ()
    assert [h.rule_id for h in _one(pack, _ctx({"card_count_1h": 5.0})).hits] == ["NE", "NOT_IN"]
    assert [h.rule_id for h in _one(pack, _ctx({"card_count_1h": 1.0})).hits] == ["NE"]
