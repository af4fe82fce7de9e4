"""YAML configuration files read into pydantic models, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fraudstream.errors import ConfigurationError, invalid

Model = TypeVar("Model", bound=BaseModel)


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The settings mapping in `path` ({} for an empty file); `what` names the kind of
    file in the error (missing, not YAML, not a mapping)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} {path}: expected a mapping of settings")
    return data


def load(model: type[Model], path: str | Path, what: str) -> Model:
    """`model` from the YAML file at `path`: its settings over the model's defaults."""
    path = Path(path)
    data = read_mapping(path, what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid(f"{what} {path}", exc) from None
