"""The model registry: immutable version directories plus lifecycle stages.

`Registry` (store.py) is the API; `cli.models` the `fraudctl models` command group.
"""

from __future__ import annotations

from fraudstream.registry.errors import ChecksumError, ModelNotFoundError, RegistryError
from fraudstream.registry.stages import Stage
from fraudstream.registry.store import ModelVersion, Registry, VersionDetails

__all__ = [
    "ChecksumError",
    "ModelNotFoundError",
    "ModelVersion",
    "Registry",
    "RegistryError",
    "Stage",
    "VersionDetails",
]
