"""Sealing one immutable version directory (no training code: the files come from the
caller, `fraudstream.training.publish` for trained models).

Files are written into a hidden temporary directory next to the final one, made
read-only, then the directory is renamed into place: readers see a complete version or
none. The version id is `v<YYYYMMDD>-<HHMMSS>-<8 hex>`, the hash covering the serving
files and the registration time.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fraudstream.registry.errors import RegistryError
from fraudstream.registry.files import make_read_only, sha256_file
from fraudstream.registry.layout import MANIFEST_FILE, Manifest

# Writes the serving files (ONNX members, ensemble.json, feature_spec.json, ...) into a dir.
WriteServing = Callable[[Path], None]
# Writes the documents (metrics, training record, model card) that quote the version id.
WriteDocuments = Callable[[Path, str], None]


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


def seal_version(
    model_dir: Path,
    name: str,
    at: datetime,
    write_serving: WriteServing,
    write_documents: WriteDocuments,
) -> tuple[str, Path]:
    """Write, seal and move a new version into `model_dir`; returns its id and path."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        write_serving(tmp)
        # The id hashes the serving files; the documents written next quote the id.
        version = version_id(model_dir, _digests(tmp), at)
        write_documents(tmp, version)
        manifest = Manifest(model_name=name, version=version, registered_at=at, files=_digests(tmp))
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        make_read_only(tmp)
        final = model_dir / version
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version, final
