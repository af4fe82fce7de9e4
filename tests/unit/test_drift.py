"""The drift monitor's pure parts: reference distributions, detectors, join, debounce."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from fraudstream.contracts import (
    Action,
    Decision,
    DecisionPath,
    Label,
    LabelSource,
    Verdict,
    encode,
)
from fraudstream.drift.config import (
    DebounceConfig,
    ErrorConfig,
    JoinConfig,
    MonitorConfig,
    PrecisionConfig,
    PsiConfig,
    RateConfig,
)
from fraudstream.drift.detectors import (
    Alarm,
    DdmDetector,
    PrecisionDetector,
    PsiDetector,
    RateDetector,
)
from fraudstream.drift.join import APPROVE, DECLINE, Held, LabelJoin, Seen
from fraudstream.drift.monitor import Debouncer, Monitor, Observed
from fraudstream.drift.service import DriftMetrics, observe, read_labels
from fraudstream.errors import ConfigurationError
from fraudstream.features.state import DAY
from fraudstream.model.drift_reference import Distribution, DriftReference

REPO = Path(__file__).resolve().parents[2]


def test_psi_is_near_zero_on_the_same_population_and_large_on_a_shifted_one() -> None:
    rng = np.random.default_rng(3)
    reference = Distribution.of(rng.lognormal(3.0, 1.0, 50_000))
    assert len(reference.edges) == 9
    assert sum(reference.shares) == pytest.approx(1.0)
    assert reference.psi(rng.lognormal(3.0, 1.0, 5_000)) < 0.01
    assert reference.psi(rng.lognormal(3.0 + np.log(2.0), 1.0, 5_000)) > 0.25


def test_missing_values_are_a_bin_of_their_own() -> None:
    values = np.array([1.0, 2.0, np.nan, 3.0] * 1_000)
    reference = Distribution.of(values)
    assert reference.missing == pytest.approx(0.25)
    assert reference.psi(values) == pytest.approx(0.0, abs=1e-12)
    assert reference.psi(np.array([1.0, 2.0, 3.0] * 1_000)) > 0.25  # no NaN any more


def test_a_column_of_repeated_values_keeps_strictly_increasing_edges() -> None:
    values = np.concatenate([np.zeros(9_000), np.ones(1_000)])  # a binary feature
    reference = Distribution.of(values)
    assert reference.edges == (1.0,)
    assert reference.shares == pytest.approx((0.9, 0.1))
    assert reference.psi(np.concatenate([np.zeros(500), np.ones(500)])) > 0.25
    constant = Distribution.of(np.full(100, 4.0))  # a value it never had still shows
    assert constant.psi(np.full(10, 5.0)) > 0.25
    assert constant.psi(np.full(10, 4.0)) == 0.0


def _times(n: int, start: float = 0.0) -> np.ndarray:
    return start + np.arange(n, dtype=np.float64)


def test_psi_alarms_after_consecutive_drifted_windows_and_once() -> None:
    rng = np.random.default_rng(4)
    reference = Distribution.of(rng.normal(0.0, 1.0, 20_000))
    config = PsiConfig(window=1_000, threshold=0.25, severe=5.0, consecutive=2)
    detector = PsiDetector("feature_psi", reference, config, "v1", feature="amount_log")
    assert detector.update(rng.normal(0.0, 1.0, 3_000), _times(3_000)) == []
    assert detector.update(rng.normal(1.0, 1.0, 1_000), _times(1_000, 3_000)) == []  # one window
    alarms = detector.update(rng.normal(1.0, 1.0, 2_500), _times(2_500, 4_000))
    assert [(a.key, a.window_start, a.window_end) for a in alarms] == [
        ("feature_psi.amount_log", 3_000.0, 4_999.0)
    ]
    assert not alarms[0].severe
    assert alarms[0].value > 0.25
    assert detector.drifted
    assert detector.update(rng.normal(1.0, 1.0, 1_000), _times(1_000)) == []
    detector.update(rng.normal(0.0, 1.0, 2_000), _times(2_000, 9_000))
    assert not detector.drifted


def test_a_severe_window_alarms_alone() -> None:
    reference = Distribution.of(np.random.default_rng(5).normal(0.0, 1.0, 10_000))
    detector = PsiDetector("score_psi", reference, PsiConfig(window=500, consecutive=3), "v1")
    alarms = detector.update(np.full(500, 9.0), _times(500))
    assert len(alarms) == 1
    assert alarms[0].severe


RATES = RateConfig(delta=1e-5, factor=1.5, min_events=1_000, min_expected=50.0)


def test_rate_detector_is_silent_on_a_stationary_stream_and_alarms_after_a_rise() -> None:
    rng = np.random.default_rng(6)
    detector = RateDetector("decline_rate", "decline_rate", reference=0.01, delta=1e-5,
                            config=RATES, version="v1")  # fmt: skip
    steady = (rng.random(200_000) < 0.01).astype(float)
    assert detector.update(steady.tolist(), _times(200_000).tolist()) == []
    risen = (rng.random(20_000) < 0.03).astype(float)
    alarms = detector.update(risen.tolist(), _times(20_000, 200_000).tolist())
    assert len(alarms) == 1
    assert alarms[0].window_end - 200_000 < 5_000  # seen within 5,000 events of the rise
    assert alarms[0].value >= 1.5 * alarms[0].evidence["before"]
    assert detector.drifted


def test_ddm_alarms_when_the_error_rate_rises_and_the_alarm_is_a_moment() -> None:
    rng = np.random.default_rng(7)
    detector = DdmDetector(ErrorConfig(warm_start=200, drift_threshold=3.0), "v1")
    assert detector.update((rng.random(3_000) < 0.05).tolist(), _times(3_000).tolist()) == []
    alarms = detector.update((rng.random(1_000) < 0.3).tolist(), _times(1_000, 3_000).tolist())
    assert alarms
    assert alarms[0].detector == "error_ddm"
    assert alarms[0].window_end - 3_000 < 300
    assert not detector.drifted


def test_precision_alarms_below_the_floor_over_the_latest_settled_declines() -> None:
    detector = PrecisionDetector(PrecisionConfig(window=100, min_settled=50, floor=0.5), "v1")
    assert detector.update([True] * 100, _times(100).tolist()) == []
    alarms = detector.update([False] * 60, _times(60, 100).tolist())
    assert len(alarms) == 1
    assert alarms[0].value < 0.5
    assert alarms[0].window_end == 100 + 50.0  # the 51st legitimate decline of the last 100


def _seen(txid: str, at: float, action: int = APPROVE, score: float = 0.1) -> Seen:
    return Seen(txid, at, "v1", score, action)


def test_a_label_joins_its_decision_once() -> None:
    join = LabelJoin(JoinConfig())
    assert join.add_decision(_seen("t1", 100.0, DECLINE, 0.9)) is None
    outcome = join.add_label("t1", True, 500.0)
    assert outcome is not None
    assert (outcome.action, outcome.fraud, outcome.at) == (
        DECLINE,
        True,
        500.0,
    )
    assert join.add_label("t1", False, 600.0) is None
    assert (join.counts.joined, join.counts.duplicate) == (1, 1)


def test_a_label_before_its_decision_waits_then_joins_or_is_an_orphan() -> None:
    join = LabelJoin(JoinConfig(pending_minutes=10))
    assert join.add_label("early", True, 100.0) is None
    assert join.add_label("never", True, 100.0) is None
    outcome = join.add_decision(_seen("early", 200.0))
    assert outcome is not None
    assert outcome.fraud
    assert join.counts.early == 1
    join.add_decision(_seen("later", 100.0 + 10 * 60 + 1))
    join.expire()
    assert join.counts.orphan == 1
    assert "never" not in join.pending


def test_unlabelled_declines_settle_as_legitimate_after_the_ttl() -> None:
    join = LabelJoin(JoinConfig(ttl_days=1.0))
    join.add_decision(_seen("declined", 0.0, DECLINE, 0.95))
    join.add_decision(_seen("approved", 0.0))
    join.add_decision(_seen("labelled", 0.0, DECLINE, 0.9))
    join.add_label("labelled", True, 10.0)
    join.add_decision(_seen("now", DAY + 1.0))
    settled = join.expire()
    assert [(o.action, o.fraud, o.labelled) for o in settled] == [(DECLINE, False, False)]
    assert set(join.decisions) == {"now"}
    assert join.counts.settled == 1


def test_the_join_stays_under_its_bound_and_rebuilds_its_order_from_the_maps() -> None:
    decisions: dict[str, Held] = {}
    join = LabelJoin(JoinConfig(max_decisions=1_000), decisions)
    for i in range(1_500):
        join.add_decision(_seen(f"t{i}", float(i)))
    join.expire()
    assert len(decisions) == 1_000
    assert join.counts.evicted == 500
    assert "t499" not in decisions
    restarted = LabelJoin(JoinConfig(max_decisions=1_000, ttl_days=1.0), decisions)
    restarted.add_decision(_seen("late", 600.0 + DAY))
    restarted.expire()
    assert sorted(decisions, key=lambda k: float(decisions[k][0]))[0] == "t600"


def _alarm(detector: str, feature: str | None = None, *, at: float = 0.0,
           severe: bool = False) -> Alarm:  # fmt: skip
    return Alarm(detector, "psi", 0.4, 0.25, severe, "v1", at, at, feature)


def test_one_drifted_feature_alone_does_not_trigger_two_do() -> None:
    debounce = Debouncer(DebounceConfig(), "fraud")
    first = _alarm("feature_psi", "amount_log", at=10.0)
    assert debounce.offer([first], []) is None
    trigger = debounce.offer([_alarm("feature_psi", "card_sum_1d", at=20.0)], [first])
    assert trigger is not None
    assert (trigger.model_version, trigger.detector, trigger.severe) == ("v1", "feature_psi", False)
    assert "feature_psi.amount_log.psi" in trigger.evidence
    assert trigger.window_start.timestamp() == 10.0


def test_outputs_alone_do_not_trigger_outputs_and_labels_do() -> None:
    debounce = Debouncer(DebounceConfig(), "fraud")
    declines = _alarm("decline_rate")
    assert debounce.offer([declines, _alarm("score_mean")], []) is None
    assert debounce.offer([_alarm("error_ddm")], [declines]) is not None


def test_a_severe_alarm_triggers_alone_but_not_twice_within_the_interval() -> None:
    debounce = Debouncer(DebounceConfig(min_interval_hours=1.0), "fraud")
    assert debounce.offer([_alarm("score_psi", severe=True, at=0.0)], []) is not None
    assert debounce.offer([_alarm("score_psi", severe=True, at=1_800.0)], []) is None
    assert debounce.suppressed == 1
    assert debounce.offer([_alarm("score_psi", severe=True, at=3_601.0)], []) is not None


def test_versions_without_a_reference_are_counted_not_watched() -> None:
    monitor = Monitor(MonitorConfig(), lambda version: None)
    fed = monitor.on_decisions([Observed(_seen("t1", 1.0), {})])
    assert fed.alarms == []
    assert monitor.detectors.unwatched == {"v1"}


def test_the_reference_watches_top_features_and_the_payment_inputs_not_the_clock() -> None:
    rng = np.random.default_rng(8)
    names = ("hour_sin", "card_count_1h", "merchant_label_risk_7d", "amount_log", "card_present")
    X = rng.random((1_000, len(names)))
    importance = dict(zip(names, (100.0, 5.0, 50.0, 0.0, 1.0), strict=True))
    actions = np.array([0] * 990 + [1] * 5 + [2] * 5)
    y = np.array([0] * 990 + [1] * 10)
    reference = DriftReference.build(X, names, rng.random(1_000), importance=importance,
                                     actions=actions, y=y, top=2)  # fmt: skip
    assert list(reference.features) == ["card_count_1h", "card_present", "amount_log"]
    assert (reference.decline_rate, reference.review_rate, reference.miss_rate) == (
        0.005, 0.005, 0.0,
    )  # fmt: skip


def test_the_repository_drift_config_loads_and_bad_ones_are_refused(tmp_path: Path) -> None:
    assert MonitorConfig.from_yaml(REPO / "config" / "drift.yaml") == MonitorConfig()
    bad = tmp_path / "drift.yaml"
    bad.write_text("psi:\n  window: 10\n")
    with pytest.raises(ConfigurationError, match=r"psi\.window"):
        MonitorConfig.from_yaml(bad)
    with pytest.raises(ConfigurationError, match="does not exist"):
        MonitorConfig.from_yaml(tmp_path / "missing.yaml")


def test_the_service_reads_ml_decisions_and_labels_and_counts_the_rest() -> None:
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    ml = Decision(transaction_id="t1", card_token="tok", action=Action.DECLINE, score=0.9,
                  model_version="v1", path=DecisionPath.ML, event_time=at, decided_at=at,
                  latency_ms=3.0, monitored={"amount_log": 4.2})  # fmt: skip
    rules = ml.model_copy(update={"path": DecisionPath.RULES, "score": None})
    metrics = DriftMetrics()
    seen = observe([encode(ml), encode(rules), b"{not json", None], metrics)
    assert [(o.seen.transaction_id, o.seen.action, o.features) for o in seen] == [
        ("t1", DECLINE, {"amount_log": 4.2})
    ]
    label = Label(transaction_id="t1", verdict=Verdict.FRAUD, source=LabelSource.REVIEWER,
                  labelled_at=at)  # fmt: skip
    assert read_labels([encode(label), b"[]"], metrics) == [("t1", True, at.timestamp())]
    counts = {
        tuple(s.labels.values()): s.value
        for m in metrics.records.collect() for s in m.samples if s.name.endswith("_total")
    }  # fmt: skip
    assert counts == {("decisions", "ml"): 1.0, ("decisions", "not_ml"): 1.0,
                      ("decisions", "invalid"): 2.0, ("labels", "ok"): 1.0,
                      ("labels", "invalid"): 1.0}  # fmt: skip
