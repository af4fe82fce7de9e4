"""Building one immutable version directory from a `TrainResult` (train-time dependencies).

Files are written into a hidden temporary directory next to the final one, made
read-only, then the directory is renamed into place: readers see a complete version or
none. The version id is `v<YYYYMMDD>-<HHMMSS>-<8 hex>`, the hash covering the model files
and the registration time.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from datetime import datetime
from pathlib import Path

from fraudstream.model.metrics import ParityResult
from fraudstream.registry.card import plot_pr_curves, render_model_card
from fraudstream.registry.errors import RegistryError
from fraudstream.registry.files import make_read_only, sha256_file
from fraudstream.registry.layout import (
    CARD_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    PR_CURVE_FILE,
    TRAINING_FILE,
    Manifest,
)
from fraudstream.training.export import ParityBounds, export_onnx
from fraudstream.training.train import TrainResult


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }


def version_id(model_dir: Path, digests: dict[str, str], at: datetime) -> str:
    """A new, unused id: registration time plus a short hash of content and time."""
    stamp = f"v{at:%Y%m%d-%H%M%S}"
    content = "".join(f"{name}:{digest};" for name, digest in sorted(digests.items()))
    for salt in range(1000):
        short = hashlib.sha256(f"{content}{at.isoformat()}#{salt}".encode()).hexdigest()[:8]
        candidate = f"{stamp}-{short}"
        if not (model_dir / candidate).exists():
            return candidate
    raise RegistryError(f"no free version id under {model_dir}: clean up stale directories")


def _write_documents(
    tmp: Path, name: str, version: str, result: TrainResult, parity: dict[str, ParityResult]
) -> None:
    """metrics.json (with parity), training.json, the model card and the PR curves."""
    metrics = result.metrics.model_copy(update={"parity": parity})
    (tmp / METRICS_FILE).write_text(metrics.model_dump_json(indent=2) + "\n")
    (tmp / TRAINING_FILE).write_text(result.info.model_dump_json(indent=2) + "\n")
    card = render_model_card(
        name=name,
        version=version,
        info=result.info,
        metrics=metrics,
        ensemble=result.ensemble,
        spec=result.feature_spec,
    )
    (tmp / CARD_FILE).write_text(card)
    plot_pr_curves(
        result.test_labels, result.test_scores, tmp / PR_CURVE_FILE, f"{name} {version} (test)"
    )


def publish_version(
    model_dir: Path,
    name: str,
    result: TrainResult,
    at: datetime,
    parity_bounds: ParityBounds | None = None,
) -> tuple[str, Path]:
    """Write, seal and move a new version into `model_dir`; returns its id and path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        parity = export_onnx(result, tmp, parity_bounds)
        # The id hashes the serving files; the documents written next quote the id.
        version = version_id(model_dir, _digests(tmp), at)
        _write_documents(tmp, name, version, result, parity)
        manifest = Manifest(model_name=name, version=version, registered_at=at, files=_digests(tmp))
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        make_read_only(tmp)
        final = model_dir / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, final
