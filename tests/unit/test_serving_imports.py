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
