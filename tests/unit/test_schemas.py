"""The JSON Schemas in the repository must match the models."""

from __future__ import annotations

import json
from pathlib import Path

from fraudstream.contracts import CONTRACTS, schemas
from tests.factories import samples

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_exported_schemas_are_current() -> None:
    outdated = schemas.stale(SCHEMA_DIR, CONTRACTS)
    assert not outdated, f"stale: {outdated}; run `fraudctl schemas export`"


def test_stale_detects_a_changed_file(tmp_path: Path) -> None:
    schemas.write(tmp_path, CONTRACTS)
    assert schemas.stale(tmp_path, CONTRACTS) == []
    target = tmp_path / "Transaction.schema.json"
    target.write_text(target.read_text().replace('"amount"', '"amount_eur"'))
    (tmp_path / "Label.schema.json").unlink()
    assert sorted(schemas.stale(tmp_path, CONTRACTS)) == [
        "Label.schema.json",
        "Transaction.schema.json",
    ]


def test_schemas_describe_the_sample_messages() -> None:
    for message in samples():
        schema = json.loads((SCHEMA_DIR / f"{type(message).__name__}.schema.json").read_text())
        required = set(schema.get("required", []))
        produced = set(message.model_dump(mode="json"))
        assert required <= produced
        assert set(schema["properties"]) >= produced
        assert schema["additionalProperties"] is False
