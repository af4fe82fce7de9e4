"""`Registry`: immutable model versions on disk plus their mutable lifecycle stages.

Reading (list, show, champion, load) needs only numpy, pydantic and onnxruntime, so the
scorer can use it; a trained model is added by `fraudstream.training.publish.register`.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from fraudstream.contracts.messages import ModelEvent
from fraudstream.model.ensemble import EnsembleSpec
from fraudstream.model.feature_spec import FeatureSpecDoc
from fraudstream.model.metrics import MetricsReport
from fraudstream.model.onnx_ensemble import ENSEMBLE_FILE, FEATURE_SPEC_FILE, OnnxEnsemble
from fraudstream.model.provenance import TrainingInfo
from fraudstream.registry import stages
from fraudstream.registry.compare import Comparison, score_version
from fraudstream.registry.errors import ChecksumError, ModelNotFoundError, RegistryError
from fraudstream.registry.files import locked, mismatched_files, write_atomic
from fraudstream.registry.layout import (
    EVALUATIONS_DIR,
    MANIFEST_FILE,
    METRICS_FILE,
    STAGES_FILE,
    TRAINING_FILE,
    Manifest,
    check_model_name,
    is_version_id,
)
from fraudstream.registry.publish import WriteDocuments, WriteServing, seal_version
from fraudstream.registry.stages import Stage, StageBook


class ModelVersion(BaseModel):
    """One registered version and its current stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str
    version: str
    path: Path
    registered_at: datetime
    stage: Stage
    canary_share: float | None = None


class VersionDetails(BaseModel):
    """Everything recorded about a version (`show`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: ModelVersion
    training: TrainingInfo
    metrics: MetricsReport
    ensemble: EnsembleSpec
    feature_spec: FeatureSpecDoc


_Doc = TypeVar("_Doc", bound=BaseModel)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _read(path: Path, kind: type[_Doc]) -> _Doc:
    try:
        return kind.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise RegistryError(f"cannot read {path} ({exc}); the registry may be damaged") from exc


class Registry:
    """Model versions under `root/<model_name>/<version>/`, stages in `stages.json`."""

    def __init__(self, root: str | Path = "models", clock: Callable[[], datetime] = _utcnow):
        self.root = Path(root)
        self._clock = clock

    # ---- reading ----

    def model_names(self) -> builtins.list[str]:
        """Models with at least one registered version."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self._versions(p))

    def list(self, name: str) -> builtins.list[ModelVersion]:
        """All versions of `name`, oldest first, with their stages."""
        model_dir = self._model_dir(name)
        book = self._book(name)
        found = []
        for path in self._versions(model_dir):
            manifest = _read(path / MANIFEST_FILE, Manifest)
            state = book.versions.get(path.name)
            found.append(
                ModelVersion(
                    model_name=name,
                    version=path.name,
                    path=path,
                    registered_at=manifest.registered_at,
                    stage=state.stage if state else Stage.CANDIDATE,
                    canary_share=state.canary_share if state else None,
                )
            )
        return sorted(found, key=lambda v: (v.registered_at, v.version))

    def get(self, name: str, version: str) -> ModelVersion:
        """One version; `RegistryError` naming the known versions when it does not exist."""
        versions = {v.version: v for v in self.list(name)}
        if version not in versions:
            known = ", ".join(versions) or "none"
            raise RegistryError(f"{name} has no version {version!r} (known: {known})")
        return versions[version]

    def show(self, name: str, version: str) -> VersionDetails:
        """The version with its training record, metrics, ensemble and feature spec."""
        found = self.get(name, version)
        return VersionDetails(
            version=found,
            training=_read(found.path / TRAINING_FILE, TrainingInfo),
            metrics=_read(found.path / METRICS_FILE, MetricsReport),
            ensemble=_read(found.path / ENSEMBLE_FILE, EnsembleSpec),
            feature_spec=_read(found.path / FEATURE_SPEC_FILE, FeatureSpecDoc),
        )

    def champion(self, name: str) -> ModelVersion | None:
        """The current champion, or None before the first promotion."""
        return next((v for v in self.list(name) if v.stage is Stage.CHAMPION), None)

    def in_stage(self, name: str, stage: Stage) -> builtins.list[ModelVersion]:
        """Versions currently in `stage`."""
        return [v for v in self.list(name) if v.stage is stage]

    def champion_history(self, name: str) -> builtins.list[str]:
        """The versions that have been champion, oldest first; the last is the champion
        now and the one before it is what `rollback` restores."""
        return list(self._book(name).champions)

    def events(self, name: str) -> builtins.list[ModelEvent]:
        """Every lifecycle event of `name`, oldest first."""
        return builtins.list(self._book(name).events)

    def load(self, name: str, version: str, *, intra_op_num_threads: int = 1) -> OnnxEnsemble:
        """The version ready to score, once its files match the manifest (`ChecksumError`)."""
        return OnnxEnsemble.load(
            self.checked_path(name, version), intra_op_num_threads=intra_op_num_threads
        )

    def checked_path(self, name: str, version: str) -> Path:
        """The version's directory after checking every file listed in its manifest.

        Raises `ChecksumError` naming each file that is missing or whose SHA-256 differs.
        """
        path = self.get(name, version).path
        bad = mismatched_files(path, _read(path / MANIFEST_FILE, Manifest).files)
        if bad:
            raise ChecksumError(
                f"{name} {version}: {', '.join(bad)} missing or not matching the SHA-256 in "
                f"{path / MANIFEST_FILE} (corrupt, truncated or edited; versions are "
                "immutable): restore the version from a copy or register a new one",
                tuple(bad),
            )
        return path

    def verify(self, name: str, version: str) -> None:
        """Raise `RegistryError` if any file differs from the version's manifest or is extra."""
        path = self.checked_path(name, version)
        manifest = _read(path / MANIFEST_FILE, Manifest)
        present = {p.name for p in path.iterdir() if p.is_file()} - {MANIFEST_FILE}
        extra = sorted(present - set(manifest.files))
        if extra:
            raise RegistryError(
                f"{name} {version} has files its manifest does not list ({extra}); versions "
                "are immutable: remove them or register a new version instead"
            )

    # ---- writing ----

    def add_version(
        self,
        name: str,
        write_serving: WriteServing,
        write_documents: WriteDocuments,
        *,
        actor: str = "trainer",
        note: str = "",
    ) -> ModelVersion:
        """Store a new immutable candidate version from the files the two writers put in
        its directory (`fraudstream.training.publish.register` for a trained model)."""
        model_dir = self.root / check_model_name(name)
        stages.check_actor(actor)
        at = self._clock()
        version, _ = seal_version(model_dir, name, at, write_serving, write_documents)
        self._change(name, lambda book: stages.register(book, version, actor, at, note))
        return self.get(name, version)

    def set_stage(
        self,
        name: str,
        version: str,
        stage: Stage | str,
        *,
        actor: str,
        canary_share: float | None = None,
        note: str = "",
    ) -> ModelEvent:
        """Move a version to shadow, canary (with share), champion or retired."""
        self.get(name, version)
        try:
            target = Stage(stage)
        except ValueError:
            raise RegistryError(
                f"unknown stage {stage!r}: use one of {list(stages.SETTABLE)}"
            ) from None
        at = self._clock()
        return self._change(
            name,
            lambda book: stages.set_stage(
                book, version, target, actor=actor, at=at, canary_share=canary_share, note=note
            ),
        )

    def rollback(self, name: str, *, actor: str, note: str = "") -> ModelEvent:
        """Retire the champion and restore the previous one."""
        at = self._clock()
        return self._change(name, lambda book: stages.rollback(book, actor, at, note))

    def compare(
        self,
        name: str,
        v1: str,
        v2: str,
        X: np.ndarray | Callable[[VersionDetails], np.ndarray],
        y: np.ndarray,
    ) -> Comparison:
        """Score both versions with ONNX on the same labelled rows, same metrics.

        `X` is one matrix for both, or a function building each version's matrix from its
        details (versions may use different feature specs).
        """
        metrics = {}
        for version in (v1, v2):
            details = self.show(name, version)
            matrix = X(details) if callable(X) else X
            if len(matrix) != len(y) or len(y) == 0 or not np.isin(y, (0, 1)).all():
                raise RegistryError("compare needs the same number (> 0) of rows and 0/1 labels")
            model = self.load(name, version)
            metrics[version] = score_version(model, details.metrics.member_thresholds, matrix, y)
        return Comparison(
            model_name=name, a=v1, b=v2, rows=len(y), frauds=int(np.sum(y)), metrics=metrics
        )

    def record_evaluation(self, name: str, version: str, document: str) -> Path:
        """Keep an evaluation of `version` (JSON) beside it in `evaluations/<version>.json`:
        a claim about the version on some data, so outside its sealed directory."""
        self.get(name, version)
        path = self._model_dir(name) / EVALUATIONS_DIR / f"{version}.json"
        path.parent.mkdir(exist_ok=True)
        write_atomic(path, document.encode())
        return path

    def evaluation(self, name: str, version: str) -> str | None:
        """The evaluation recorded for `version` (JSON text), if any."""
        path = self._model_dir(name) / EVALUATIONS_DIR / f"{version}.json"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    # ---- internals ----

    def _model_dir(self, name: str) -> Path:
        model_dir = self.root / check_model_name(name)
        if not model_dir.is_dir():
            known = ", ".join(self.model_names()) or "none"
            raise ModelNotFoundError(
                f"no model {name!r} under {self.root} (known: {known}); train and register "
                "one first, or point --registry / FRAUD_REGISTRY_DIR at the right directory"
            )
        return model_dir

    @staticmethod
    def _versions(model_dir: Path) -> builtins.list[Path]:
        return [
            p
            for p in model_dir.iterdir()
            if p.is_dir() and is_version_id(p.name) and (p / MANIFEST_FILE).is_file()
        ]

    def _book(self, name: str) -> StageBook:
        path = self._model_dir(name) / STAGES_FILE
        return _read(path, StageBook) if path.is_file() else StageBook(model_name=name)

    def _change(
        self, name: str, change: Callable[[StageBook], tuple[StageBook, ModelEvent]]
    ) -> ModelEvent:
        """Apply one stage change under the model's lock and write stages.json atomically."""
        model_dir = self._model_dir(name)
        with locked(model_dir):
            book, event = change(self._book(name))
            write_atomic(model_dir / STAGES_FILE, (book.model_dump_json(indent=2) + "\n").encode())
        return event
