"""`MODEL_CARD.md` and `pr_curve.png` for a model version (train-time: needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fraudstream.model.ensemble import EnsembleSpec, PlattCalibrator, Thresholds
from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.metrics import MetricsReport, pr_curve
from fraudstream.model.provenance import TrainingInfo
from fraudstream.registry.compare import fmt, metrics_table


def _data_section(info: TrainingInfo, spec: FeatureSpecDoc) -> list[str]:
    lines = [
        "## Data window",
        "Split by event time (never at random); each window is strictly later than the last.",
        "",
        "| window | start (UTC) | end (UTC) | rows | frauds | fraud rate |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {w.name} | {w.start:%Y-%m-%d %H:%M:%S} | {w.end:%Y-%m-%d %H:%M:%S} | {w.rows} "
        f"| {w.frauds} | {w.fraud_rate:.4%} |"
        for w in info.windows
    ]
    skipped = sum(info.skipped_rows.values())
    lines += [
        "",
        f"Input rows refused by the contract and left out: {skipped}"
        + (" (" + ", ".join(f"{reason}: {n}" for reason, n in sorted(info.skipped_rows.items()))
           + ")" if skipped else "")
        + ".",
    ]  # fmt: skip
    if info.warmup_rows or info.immature_rows:
        lines.append(
            f"Entity state was warmed on {info.warmup_rows} earlier rows; {info.immature_rows} "
            "rows at the window's end were left out, too recent for their labels to be known."
        )
    defaults = ", ".join(f"`{k}`={v:g}" for k, v in spec.defaults.items()) or "none"
    lines += [
        "",
        "## Features",
        f"{len(spec.names)} float32 features, in this order: "
        + ", ".join(f"`{n}`" for n in spec.names),
        "",
        f"Missing values: NaN. LightGBM routes them natively; the logistic regression imputes "
        f"the spec default ({defaults}), else the training median. Source: `{spec.source}`.",
    ]
    return lines


def _method_section(info: TrainingInfo, ensemble: EnsembleSpec) -> list[str]:
    cfg = info.config
    weights = ", ".join(
        f"{n} {w:.3f}"
        for n, w in zip(ensemble.combiner.members, ensemble.combiner.weights, strict=True)
    )
    return [
        "## Class imbalance",
        f"Training fraud rate {info.fraud_rate:.3%}. LightGBM trains on the natural class "
        f"balance (scale_pos_weight={cfg.lightgbm.scale_pos_weight:g}) and early-stops on "
        "validation average precision: reweighting would inflate its probabilities without "
        "improving ranking. The logistic regression uses balanced class weights "
        f"(balanced={cfg.logreg.class_weight_balanced}) so its boundary is not set by the "
        "legitimate majority. Neither member's raw output is used as a probability: the "
        "combiner and calibrator, fitted on the unweighted validation window, restore the "
        "true base rate.",
        "",
        "## Ensemble and calibration",
        f"Members: {', '.join(f'{m.name} ({m.family})' for m in ensemble.members)}, each "
        "served by ONNX Runtime. Combiner: non-negative logistic stacking on member logits "
        f"(weights: {weights}; intercept {ensemble.combiner.intercept:.3f}), fitted on the "
        f"validation window. Calibrator: {_calibrator_text(ensemble)} Member scores are "
        "Platt-calibrated per member.",
        "",
        _disagreement_text(ensemble),
    ]


def _calibrator_text(ensemble: EnsembleSpec) -> str:
    cal = ensemble.calibrator
    if isinstance(cal, PlattCalibrator):
        what = f"Platt scaling of the combined logit (a={cal.a:.3f}, b={cal.b:.3f})."
    else:
        tails = (
            f" with logistic tails (slope {cal.tail_slope:.3f})" if cal.tail_slope else
            ", constant beyond its ends"
        )  # fmt: skip
        what = (
            f"centred isotonic regression of the combined logit ({len(cal.x)} breakpoints, "
            f"applied with `np.interp`){tails}."
        )
    losses = ensemble.calibration_log_loss
    if not losses:
        return what
    tried = ", ".join(f"{name} {loss:.5f}" for name, loss in sorted(losses.items()))
    return (
        f"{what} Chosen by 5-fold cross-validated log-loss on the validation window "
        f"({tried}); strictly increasing, so no scores are tied at a floor."
    )


def _disagreement_text(ensemble: EnsembleSpec) -> str:
    margin = f"{ensemble.disagreement_margin:g}"
    if ensemble.disagreement_reviews:
        return (
            f"Disagreement: when the members' calibrated probabilities differ by more than "
            f"{margin}, the case goes to review; on validation these cases were fraud at "
            "least as often as the band cases they displace from the budget."
        )
    return (
        f"Disagreement reviews (members differing by more than {margin}) are **off** for "
        "this version: on validation they found fraud less often than the band cases they "
        "would push out of the review budget (or triggered no review at all)."
    )


def _thresholds_section(ensemble: EnsembleSpec) -> list[str]:
    t = ensemble.thresholds
    fallback = (
        ""
        if t.decline_target_met
        else " **The target precision was not reached on validation: the model declines "
        "nothing on its own (decline threshold above 1); high scores go to review.**"
    )
    return [
        "## Thresholds",
        f"- decline: score >= **{t.decline:.6f}** (validation decline rate "
        f"{t.validation_decline_rate:.4%}, precision {fmt(t.validation_decline_precision)})",
        f"- review: **{t.review:.6f}** <= score < decline (plus disagreement cases, if on) "
        f"(validation review rate {t.validation_review_rate:.4%}{_band_text(t)})",
        "",
        f"Decline is the lowest score whose validation precision reaches the target "
        f"{t.target_decline_precision:g}.{fallback} Review is the lowest score that keeps "
        f"reviews (band plus disagreements) within the review budget of "
        f"{t.review_budget:.3%} of validation traffic. Rule: {ensemble.review_rule}.",
    ]


def _band_text(t: Thresholds) -> str:
    if t.validation_band_rate is None:
        return ""
    return (
        f": the score band {t.validation_band_rate:.4%}, disagreement cases "
        f"{t.validation_review_rate - t.validation_band_rate:.4%}"
    )


def _results_section(metrics: MetricsReport) -> list[str]:
    lines = [
        "## Metrics",
        "Test window (later than everything used for fitting):",
        "",
        metrics_table(metrics.test),
        "",
        "Validation window (used for early stopping, combiner, calibration, thresholds):",
        "",
        metrics_table(metrics.validation),
        "",
        "Members' review and decline rates use thresholds chosen for each member the same "
        "way as the ensemble's. PR curves on the test window: `pr_curve.png`.",
        "",
        "## ONNX parity",
        "| output | rows | max abs diff | bound |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {p.rows} | {p.max_abs_diff:.3g} | {p.bound:.3g} |"
        for name, p in metrics.parity.items()
    ]
    return lines


LIMITATIONS = [
    "## Limitations",
    "- Thresholds are tuned to the validation window's traffic mix; when the fraud rate or "
    "traffic shifts, review and decline rates shift too (the drift monitor watches this).",
    "- Labels arrive late (chargebacks take weeks): the most recent window under-counts fraud.",
    "- Calibration is flat beyond the extreme calibration breakpoints.",
    "- Explanations (`lightgbm.txt`, pred_contrib) cover the LightGBM member only.",
]


def render_model_card(
    *,
    name: str,
    version: str,
    info: TrainingInfo,
    metrics: MetricsReport,
    ensemble: EnsembleSpec,
    spec: FeatureSpecDoc,
) -> str:
    """The model card in markdown."""
    lines = [
        f"# Model card: {name} {version}",
        "",
        "## Intended use",
        "Scores card payments for fraud in the fraudstream scorer: a calibrated probability "
        "that the decision stage turns into approve / review / decline with the thresholds "
        "below. Not for credit decisions or any use outside card-payment fraud screening.",
        "",
        *_data_section(info, spec),
        "",
        *_method_section(info, ensemble),
        "",
        *_thresholds_section(ensemble),
        "",
        *_results_section(metrics),
        "",
        *LIMITATIONS,
        "",
        "## Provenance",
        f"Seed {info.seed}; code {info.code_version.package} @ {info.code_version.git_commit}; "
        f"trained {info.trained_at:%Y-%m-%d %H:%M:%S %Z} in {info.duration_seconds:.1f} s; "
        "libraries: " + ", ".join(f"{k} {v}" for k, v in info.libraries.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def plot_pr_curves(
    labels: np.ndarray, scores: dict[str, np.ndarray], path: Path, title: str
) -> None:
    """Precision-recall curves of each scorer on the test window, as a PNG."""
    figure = Figure(figsize=(6.0, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in scores.items():
        precision, recall = pr_curve(labels, values)
        if name == "ensemble":  # drawn over the members, dashed so they stay visible
            axes.step(recall, precision, where="post", label=name, linestyle="--", color="black")
        else:
            axes.step(recall, precision, where="post", label=name)
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, format="png")
