"""Serving stays lean: the scorer, monitor, archiver, review service and operator CLI
never import the training package (it needs the `train` extra: scikit-learn, skl2onnx,
onnxmltools, onnx, pandas) or the simulator; what both sides share lives in
`fraudstream.model`."""

from __future__ import annotations

import subprocess
import sys

from fraudstream.cli import TRAIN_EXTRA_MODULES

SERVING = (
    "fraudstream.scoring.service", "fraudstream.state_cli", "fraudstream.history.archiver",
    "fraudstream.history.backtest_cli", "fraudstream.drift.service", "fraudstream.registry.cli",
    "fraudstream.review.service",
)  # fmt: skip
TRAINING_CODE = ("fraudstream.trainer", "fraudstream.training")

# Run in a child interpreter where the train extra's packages cannot be imported, as on a
# plain `pip install fraudstream` (LightGBM imports scikit-learn and pandas only if present).
_WITHOUT_TRAIN_EXTRA = f"""
import sys
from importlib.machinery import PathFinder
class _WithoutTrainExtra(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in {tuple(sorted(TRAIN_EXTRA_MODULES))!r}:
            return None  # not installed: imports fail, importlib.util.find_spec says None
        return PathFinder.find_spec(name, path, target)
sys.meta_path = [_WithoutTrainExtra if f is PathFinder else f for f in sys.meta_path]
"""


def _loaded(modules: tuple[str, ...], prefixes: tuple[str, ...]) -> list[str]:
    probe = (
        _WITHOUT_TRAIN_EXTRA
        + "".join(f"import {m}\n" for m in modules)
        + f"print(sorted(m for m in sys.modules for p in {prefixes!r} "
        "if m == p or m.startswith(p + '.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded: list[str] = eval(out.stdout.strip())  # noqa: S307 - our own probe's list
    return loaded


def test_serving_modules_import_no_training_code_and_run_without_the_train_extra() -> None:
    assert _loaded(SERVING, (*TRAINING_CODE, "fraudstream.simulator")) == []


def test_the_operator_cli_starts_without_the_train_extra() -> None:
    """`fraudctl scorer` runs `fraudctl` first: it imports the training stack only when a
    training command runs (the simulator needs only the base install)."""
    assert _loaded(("fraudstream.cli",), TRAINING_CODE) == []


def test_the_operator_cli_loads_the_review_extra_only_for_review_commands() -> None:
    """`fraudctl` works on an install without the `review` extra (web and database
    packages); `fraudctl review ...` imports them when it runs."""
    assert _loaded(("fraudstream.cli",), ("sqlalchemy", "fastapi", "argon2", "uvicorn")) == []


def test_the_probe_can_fail() -> None:
    """The guard itself works: the trainer does need the train extra."""
    probe = _WITHOUT_TRAIN_EXTRA + "import fraudstream.training.train\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert "ModuleNotFoundError" in out.stderr, out.stderr


def test_a_training_command_without_the_train_extra_says_what_to_install() -> None:
    probe = (
        _WITHOUT_TRAIN_EXTRA
        + "import sys\nfrom fraudstream.cli import main\n"
        + "sys.argv = ['fraudctl', 'train', '--simulate', '1000']\nmain()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=False)  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("error: this command trains models and needs the train extra")
    assert "Traceback" not in out.stderr
