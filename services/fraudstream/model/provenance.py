"""Where a model came from (`training.json`): data windows, config, code and library versions."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

import fraudstream
from fraudstream.model.train_config import TrainConfig

LIBRARIES = ("numpy", "lightgbm", "scikit-learn", "onnx", "onnxmltools", "skl2onnx", "onnxruntime")


class CodeVersion(BaseModel):
    """Package version plus the git commit the code was built from, when known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str
    git_commit: str


def git_commit() -> str:
    """`FRAUD_GIT_COMMIT` if set (images have no .git), else `git rev-parse HEAD`, else unknown."""
    if commit := os.environ.get("FRAUD_GIT_COMMIT"):
        return commit
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(fraudstream.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def code_version() -> CodeVersion:
    """This process's code version."""
    return CodeVersion(package=fraudstream.__version__, git_commit=git_commit())


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the model."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class Window(BaseModel):
    """One chronological window of the data: its time range and class balance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    start: datetime
    end: datetime
    rows: int
    frauds: int
    fraud_rate: float


class TrainingInfo(BaseModel):
    """`training.json`: data windows, seed, configuration, code and library versions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows: list[Window]
    rows: int
    frauds: int
    fraud_rate: float
    n_features: int
    seed: int
    config: TrainConfig
    code_version: CodeVersion
    libraries: dict[str, str]
    trained_at: datetime
    duration_seconds: float
    skipped_rows: dict[str, int] = Field(
        default_factory=dict, description="Input rows refused by the contract, by reason."
    )
    warmup_rows: int = Field(default=0, description="Rows before the window: state only.")
    immature_rows: int = Field(
        default=0, description="Rows left out: too recent for their labels to be known."
    )
