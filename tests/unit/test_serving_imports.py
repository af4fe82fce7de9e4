"""Serving stays lean: the scorer's modules never import the training-only ones (those
need the `train` extra: scikit-learn, skl2onnx, onnxmltools) or the simulator."""

from __future__ import annotations

import subprocess
import sys

TRAINING_ONLY = (
    "fraudstream.trainer", "fraudstream.simulator", "fraudstream.training.train",
    "fraudstream.training.members", "fraudstream.training.calibration",
    "fraudstream.training.export", "fraudstream.training.synthetic", "skl2onnx", "onnxmltools",
)  # fmt: skip


def test_the_scorer_imports_no_training_only_module() -> None:
    probe = (
        "import sys, fraudstream.scoring.service, fraudstream.state_cli, "
        "fraudstream.history.archiver, fraudstream.drift.service\n"
        f"print(sorted(m for m in sys.modules if m.startswith({TRAINING_ONLY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout


def test_the_operator_cli_starts_without_the_train_extra() -> None:
    """`fraudctl scorer` runs `fraudctl` first: it imports the training stack only when a
    training command runs (the simulator needs only the base install)."""
    needs_train_extra = tuple(m for m in TRAINING_ONLY if m != "fraudstream.simulator")
    probe = (
        "import sys, fraudstream.cli\n"
        f"print(sorted(m for m in sys.modules for p in {needs_train_extra!r} "
        "if m == p or m.startswith(p + '.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == "[]", out.stdout
