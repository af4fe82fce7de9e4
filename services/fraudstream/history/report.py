"""A backtest's report: what the candidate would have decided against what was decided.

Fraud means labelled fraud as of the report's `as_of`; every other row (labelled legit or
not labelled yet) counts as legitimate, so the false positive rate is an upper bound
while labels are still arriving. "Prevented" is the fraud amount the candidate declines;
reviewed fraud is reported apart, since a reviewer may still let it through.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fraudstream.history.backtest import Candidate, Replayed, Window

ACTIONS = ("approve", "review", "decline")
CANDIDATE, ACTUAL = "candidate", "actual"
EXAMPLES_PER_CHANGE = 5
SCORE_TOLERANCE = 1e-6  # float32 ONNX outputs, compared in float64


@dataclass
class Outcome:
    """One side's decisions on the window."""

    decisions: int
    counts: dict[str, int]
    rates: dict[str, float]
    fraud: int  # labelled fraud among these rows
    fraud_declined: int
    fraud_reviewed: int
    fraud_approved: int
    fraud_amount: float
    prevented_amount: float  # fraud amount declined
    false_positive_rate: float  # declined non-fraud / non-fraud
    recall: float  # fraud declined / fraud
    decline_precision: float | None  # fraud among declines
    average_precision: float | None  # of the score against the labels (scored rows)


@dataclass
class RuleRow:
    """One rule of the candidate pack: how often it matched and what it caught."""

    rule_id: str
    action: str
    reason: str
    hits: int
    decided: int  # rows this rule decided (the first decisive match)
    fraud_hits: int
    precision: float | None
    fraud_amount: float
    actual_hits: int  # actual decisions carrying the rule's reason code


@dataclass
class Day:
    """One day of the window."""

    date: str
    transactions: int
    rates: dict[str, dict[str, float]]  # side -> action -> rate
    reviews: dict[str, int]  # side -> review count
    review_budget: int | None  # reviews the budget allows that day


@dataclass
class Report:
    """Everything a backtest prints, writes as JSON and plots."""

    start: str
    end: str
    as_of: str
    rules_version: str
    model_version: str | None
    transactions: int
    warmup_transactions: int
    duplicates: int
    review_budget: float | None
    sides: dict[str, Outcome]
    rules: list[RuleRow]
    days: list[Day]
    changes: dict[str, int]  # "actual->candidate" -> rows
    examples: list[dict[str, Any]]
    agreement: dict[str, Any]
    pr_curve: dict[str, list[float]] = field(repr=False)  # candidate: precision, recall

    def to_json(self) -> str:
        """The report as JSON (the PR curve thinned to at most 200 points)."""
        return json.dumps(asdict(self), indent=2, default=str)


def build(
    replayed: Replayed,
    candidate: Candidate,
    window: Window,
    *,
    review_budget: float | None = None,
    examples: int = EXAMPLES_PER_CHANGE,
) -> Report:
    """The report of a replay; `review_budget` (a share of traffic) defaults to the
    candidate model's."""
    h = replayed.history
    fraud = np.asarray(pc.fill_null(h["is_fraud"], False).to_numpy(zero_copy_only=False))
    amount = h["amount"].to_numpy()
    candidate_action = np.array(replayed.action, dtype=object)
    actual_action = np.array(h["action"].to_pylist(), dtype=object)
    actual_score = np.array(
        pc.fill_null(pc.cast(h["score"], pa.float64()), np.nan).to_numpy(), dtype=float
    )
    budget = review_budget if review_budget is not None else candidate.review_budget
    has_actual = actual_action != None  # noqa: E711 - element-wise on an object array
    sides = {CANDIDATE: _outcome(candidate_action, replayed.score, fraud, amount)}
    if has_actual.any():
        sides[ACTUAL] = _outcome(
            actual_action[has_actual], actual_score[has_actual], fraud[has_actual],
            amount[has_actual],
        )  # fmt: skip
    precision, recall = _pr_curve(replayed.score, fraud)
    return Report(
        start=window.start.isoformat(), end=window.end.isoformat(),
        as_of=window.as_of.isoformat(), rules_version=candidate.rules.version,
        model_version=candidate.model_version, transactions=h.num_rows,
        warmup_transactions=replayed.warmup_rows, duplicates=replayed.duplicates,
        review_budget=budget, sides=sides,
        rules=_rules(replayed, candidate, fraud, amount),
        days=_days(h, candidate_action, actual_action, budget),
        changes=_changes(actual_action, candidate_action),
        examples=_examples(replayed, actual_action, actual_score, fraud, examples),
        agreement=_agreement(replayed, actual_action, actual_score, candidate),
        pr_curve={"precision": _thin(precision), "recall": _thin(recall)},
    )  # fmt: skip


def _outcome(action: np.ndarray, score: np.ndarray, fraud: np.ndarray,
             amount: np.ndarray) -> Outcome:  # fmt: skip
    n = len(action)
    counts = {a: int((action == a).sum()) for a in ACTIONS}
    declined, reviewed = action == "decline", action == "review"
    frauds = int(fraud.sum())
    legit = n - frauds
    fraud_declined = int((declined & fraud).sum())
    scored = ~np.isnan(score)
    return Outcome(
        decisions=n, counts=counts, rates={a: _ratio(c, n) or 0.0 for a, c in counts.items()},
        fraud=frauds, fraud_declined=fraud_declined,
        fraud_reviewed=int((reviewed & fraud).sum()),
        fraud_approved=int(((action == "approve") & fraud).sum()),
        fraud_amount=float(amount[fraud].sum()),
        prevented_amount=float(amount[declined & fraud].sum()),
        false_positive_rate=_ratio(int((declined & ~fraud).sum()), legit) or 0.0,
        recall=_ratio(fraud_declined, frauds) or 0.0,
        decline_precision=_ratio(fraud_declined, int(declined.sum())),
        average_precision=_average_precision(score[scored], fraud[scored]),
    )  # fmt: skip


def _rules(replayed: Replayed, candidate: Candidate, fraud: np.ndarray,
           amount: np.ndarray) -> list[RuleRow]:  # fmt: skip
    hits: Counter[str] = Counter()
    fraud_hits: Counter[str] = Counter()
    fraud_amount: defaultdict[str, float] = defaultdict(float)
    for row, matched in enumerate(replayed.rule_hits):
        for rule_id in matched:
            hits[rule_id] += 1
            if fraud[row]:
                fraud_hits[rule_id] += 1
                fraud_amount[rule_id] += float(amount[row])
    decided = Counter(r for r in replayed.decisive_rule if r is not None)
    actual = _actual_rule_codes(replayed.history)
    return [
        RuleRow(
            rule_id=rule.rule_id,
            action=rule.action.value,
            reason=rule.reason,
            hits=hits[rule.rule_id],
            decided=decided[rule.rule_id],
            fraud_hits=fraud_hits[rule.rule_id],
            precision=_ratio(fraud_hits[rule.rule_id], hits[rule.rule_id]),
            fraud_amount=fraud_amount[rule.rule_id],
            actual_hits=actual[rule.reason],
        )
        for rule in candidate.rules.rules
    ]


def _actual_rule_codes(history: pa.Table) -> Counter[str]:
    """How many actual decisions carry each rule reason code."""
    reasons = history["reasons"]
    flat = pc.list_flatten(reasons)
    if len(flat) == 0:
        return Counter()
    codes = pc.struct_field(flat, "code").to_numpy(zero_copy_only=False)
    sources = pc.struct_field(flat, "source").to_numpy(zero_copy_only=False)
    rows = pc.list_parent_indices(reasons).to_numpy()
    seen = {(int(r), str(c)) for r, c, s in zip(rows, codes, sources, strict=True) if s == "rule"}
    return Counter(code for _, code in seen)


def _days(history: pa.Table, candidate: np.ndarray, actual: np.ndarray,
          budget: float | None) -> list[Day]:  # fmt: skip
    dates = np.array(pc.strftime(history["event_time"], "%Y-%m-%d").to_pylist(), dtype=object)
    days = []
    for date in sorted(set(dates.tolist())):
        on = dates == date
        n = int(on.sum())
        rates, reviews = {}, {}
        for side, action in ((CANDIDATE, candidate), (ACTUAL, actual)):
            mine = action[on]
            if side == ACTUAL and (mine == None).all():  # noqa: E711
                continue
            rates[side] = {a: float((mine == a).sum()) / n for a in ACTIONS}
            reviews[side] = int((mine == "review").sum())
        days.append(Day(date, n, rates, reviews, None if budget is None else int(budget * n)))
    return days


def _changes(actual: np.ndarray, candidate: np.ndarray) -> dict[str, int]:
    pairs = Counter(
        f"{a}->{c}" for a, c in zip(actual.tolist(), candidate.tolist(), strict=True)
        if a is not None and a != c
    )  # fmt: skip
    return dict(sorted(pairs.items(), key=lambda kv: -kv[1]))


def _examples(replayed: Replayed, actual: np.ndarray, actual_score: np.ndarray,
              fraud: np.ndarray, per_change: int) -> list[dict[str, Any]]:  # fmt: skip
    """Up to `per_change` changed decisions per kind, fraud first, then by amount."""
    h = replayed.history
    amount = h["amount"].to_numpy()
    changed = np.flatnonzero(
        np.array([a is not None and a != c for a, c in zip(actual, replayed.action, strict=True)])
    )
    ranked = sorted(changed.tolist(), key=lambda i: (not fraud[i], -amount[i]))
    taken: Counter[str] = Counter()
    out = []
    ids, times = h["transaction_id"], h["event_time"]
    for i in ranked:
        change = f"{actual[i]}->{replayed.action[i]}"
        if taken[change] >= per_change:
            continue
        taken[change] += 1
        out.append({
            "change": change, "transaction_id": ids[i].as_py(),
            "event_time": times[i].as_py().isoformat(), "amount": float(amount[i]),
            "fraud": bool(fraud[i]), "actual_score": _number(actual_score[i]),
            "candidate_score": _number(replayed.score[i]),
            "candidate_rule": replayed.decisive_rule[i],
        })  # fmt: skip
    return out


def _agreement(replayed: Replayed, actual: np.ndarray, actual_score: np.ndarray,
               candidate: Candidate) -> dict[str, Any]:  # fmt: skip
    """How closely the replay reproduces the decisions made on the full path by the same
    model version (degraded and other versions' decisions are not comparable)."""
    h = replayed.history
    paths = np.array(h["decision_path"].to_pylist(), dtype=object)
    versions = np.array(h["model_version"].to_pylist(), dtype=object)
    comparable = (actual != None) & (paths != "degraded")  # noqa: E711
    if candidate.model_version is not None:
        comparable &= (versions == candidate.model_version) | (paths == "rules")
    same = comparable & (actual == np.array(replayed.action, dtype=object))
    both = comparable & ~np.isnan(actual_score) & ~np.isnan(replayed.score)
    diff = np.abs(actual_score[both] - replayed.score[both])
    return {
        "compared": int(comparable.sum()), "same_action": int(same.sum()),
        "share_same": _ratio(int(same.sum()), int(comparable.sum())),
        "scores_compared": int(both.sum()),
        "scores_within_tolerance": int((diff <= SCORE_TOLERANCE).sum()),
        "max_score_difference": float(diff.max()) if diff.size else None,
        "degraded_actual": int((paths == "degraded").sum()),
    }  # fmt: skip


def _pr_curve(score: np.ndarray, fraud: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at the rank of each fraud, by descending score (scored rows):
    the points where the curve moves."""
    scored = ~np.isnan(score)
    s, y = score[scored], fraud[scored]
    if not y.any():
        return np.array([]), np.array([])
    order = np.argsort(-s, kind="stable")
    hits = np.cumsum(y[order])
    at = np.flatnonzero(y[order])
    return hits[at] / (at + 1), hits[at] / y.sum()


def _average_precision(score: np.ndarray, fraud: np.ndarray) -> float | None:
    """The mean precision at the ranks of the frauds (precision x recall steps)."""
    precision, _recall = _pr_curve(score, fraud)
    return float(precision.mean()) if precision.size else None


def _thin(values: np.ndarray, points: int = 200) -> list[float]:
    if len(values) <= points:
        return [float(v) for v in values]
    at = np.linspace(0, len(values) - 1, points).round().astype(int)
    return [float(v) for v in values[at]]


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def render(report: Report) -> str:
    """The report as terminal tables."""
    lines = [
        f"Backtest {report.start} .. {report.end} (labels as of {report.as_of})",
        f"candidate: rules {report.rules_version}, model {report.model_version or 'none'}; "
        f"{report.transactions:,} transactions replayed after "
        f"{report.warmup_transactions:,} of warm-up",
        "",
        _table(["", *report.sides], _outcome_rows(list(report.sides.values()))),
        "",
        "Rules (candidate pack; 'actual': decisions carrying the rule's reason code)",
        _table(
            ["rule", "action", "hits", "decided", "fraud hits", "precision", "fraud amount",
             "actual"],
            [[r.rule_id, r.action, f"{r.hits:,}", f"{r.decided:,}", f"{r.fraud_hits:,}",
              _pct(r.precision), f"{r.fraud_amount:,.2f}", f"{r.actual_hits:,}"]
             for r in report.rules],
        ),
    ]  # fmt: skip
    lines += _review_lines(report) + _change_lines(report) + _agreement_lines(report)
    return "\n".join(lines)


def _outcome_rows(sides: list[Outcome]) -> list[list[str]]:
    def row(name: str, cell: Callable[[Outcome], str]) -> list[str]:
        return [name, *(cell(o) for o in sides)]

    def share(action: str) -> Callable[[Outcome], str]:
        return lambda o: f"{o.counts[action]:,} ({o.rates[action]:.2%})"

    return [
        *(row(a, share(a)) for a in ACTIONS),
        row("fraud caught (declined)", lambda o: f"{o.fraud_declined:,} / {o.fraud:,}"),
        row("fraud sent to review", lambda o: f"{o.fraud_reviewed:,}"),
        row("fraud missed (approved)", lambda o: f"{o.fraud_approved:,}"),
        row("fraud amount prevented",
            lambda o: f"{o.prevented_amount:,.2f} / {o.fraud_amount:,.2f}"),
        row("false positive rate", lambda o: f"{o.false_positive_rate:.3%}"),
        row("decline precision", lambda o: _pct(o.decline_precision)),
        row("average precision", lambda o: _fixed(o.average_precision)),
    ]  # fmt: skip


def _review_lines(report: Report) -> list[str]:
    if report.review_budget is None:
        return []
    over = sum(
        1
        for d in report.days
        if d.review_budget is not None and d.reviews[CANDIDATE] > d.review_budget
    )
    rows = [
        [
            d.date,
            f"{d.transactions:,}",
            f"{d.reviews[CANDIDATE]:,}",
            f"{d.reviews[ACTUAL]:,}" if ACTUAL in d.reviews else "-",
            f"{d.review_budget:,}",
        ]
        for d in report.days
    ]
    return ["", f"Review load per day (budget {report.review_budget:.2%} of traffic; "
                f"candidate over budget on {over} of {len(report.days)} days)",
            _table(["date", "transactions", "candidate reviews", "actual reviews", "budget"],
                   rows)]  # fmt: skip


def _change_lines(report: Report) -> list[str]:
    if not report.changes:
        return []
    examples = [
        [
            e["change"],
            e["transaction_id"],
            f"{e['amount']:,.2f}",
            "yes" if e["fraud"] else "",
            _fixed(e["actual_score"]),
            _fixed(e["candidate_score"]),
            e["candidate_rule"] or "",
        ]
        for e in report.examples
    ]
    return ["", "Decisions that would change (actual -> candidate)",
            _table(["change", "rows"], [[k, f"{v:,}"] for k, v in report.changes.items()]),
            "", "Examples (fraud first, then the largest amounts)",
            _table(["change", "transaction", "amount", "fraud", "actual score",
                    "candidate score", "rule"], examples)]  # fmt: skip


def _agreement_lines(report: Report) -> list[str]:
    a = report.agreement
    if not a["compared"]:
        return []
    return ["", f"Agreement with the decisions made on the full path by the same model: "
                f"{a['same_action']:,} of {a['compared']:,} ({a['share_same']:.2%}) same "
                f"action; {a['scores_within_tolerance']:,} of {a['scores_compared']:,} scores "
                f"within {SCORE_TOLERANCE:g}; {a['degraded_actual']:,} degraded decisions "
                "not compared"]  # fmt: skip


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (matplotlib is in the `train` extra)."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional, and slow to import

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(
            "plotting needs matplotlib: pip install 'fraudstream[train]' (or use --no-plot)"
        ) from exc
    return plt


def plot(report: Report, path: Path) -> Path:
    """The precision-recall curve and the daily rates as one PNG."""
    plt = pyplot()
    figure, (pr, declines, reviews) = plt.subplots(1, 3, figsize=(16, 4.5))
    curve = report.pr_curve
    if curve["recall"]:
        pr.plot(curve["recall"], curve["precision"], color="tab:blue", drawstyle="steps-post")
    else:
        pr.text(0.5, 0.5, "no labelled fraud among the scored rows", ha="center")
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision-recall, model {report.model_version or 'none'}")  # fmt: skip
    dates = [datetime.fromisoformat(d.date) for d in report.days]
    for side, style in ((CANDIDATE, "-"), (ACTUAL, "--")):
        if all(side in d.rates for d in report.days) and dates:
            declines.plot(dates, [d.rates[side]["decline"] for d in report.days], style,
                          label=side)  # fmt: skip
            reviews.plot(dates, [d.reviews[side] for d in report.days], style, label=side)
    if report.review_budget is not None and dates:
        reviews.plot(dates, [d.review_budget for d in report.days], ":", color="grey",
                     label="budget")  # fmt: skip
    declines.set(title="Decline rate per day", ylabel="share of transactions")
    reviews.set(title="Reviews per day", ylabel="cases")
    for axes in (declines, reviews):
        axes.legend()
        axes.tick_params(axis="x", labelrotation=30)
    figure.suptitle(f"Backtest {report.start[:10]} .. {report.end[:10]}, rules "
                    f"{report.rules_version}")  # fmt: skip
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
