"""JSON Schemas of the topic contracts, exported into the repository for other languages."""

from __future__ import annotations

import json
from pathlib import Path

from fraudstream.contracts.messages import Contract

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_filename(model: type[Contract]) -> str:
    return f"{model.__name__}.schema.json"


def render(models: tuple[type[Contract], ...]) -> dict[str, str]:
    """File name -> JSON Schema text (validation mode: what a producer must send)."""
    rendered = {}
    for model in models:
        schema = {"$schema": SCHEMA_DIALECT, **model.model_json_schema(mode="validation")}
        rendered[schema_filename(model)] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def write(directory: Path, models: tuple[type[Contract], ...]) -> list[Path]:
    """Write every schema into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render(models).items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path, models: tuple[type[Contract], ...]) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    return [
        name
        for name, text in render(models).items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
