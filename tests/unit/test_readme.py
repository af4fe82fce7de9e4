"""The README's code runs and its tables match the code, so the docs cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fraudstream.history.archiver import ArchiverSettings
from fraudstream.review.settings import ReviewSettings
from fraudstream.scoring.settings import ScorerSettings
from fraudstream.settings import CommonSettings
from fraudstream.topics import topic_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_python_examples_run(block: str) -> None:
    exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own documentation


def test_readme_has_examples() -> None:
    assert PYTHON_BLOCKS


def test_configuration_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.MULTILINE))
    expected = set()
    fields = {**ScorerSettings.model_fields, **ArchiverSettings.model_fields,
              **ReviewSettings.model_fields}  # fmt: skip
    for name, field in fields.items():  # includes CommonSettings
        alias = field.validation_alias
        expected.add(alias.choices[0] if alias else f"FRAUD_{name.upper()}")  # type: ignore[union-attr]
    assert expected - documented == set(), "undocumented settings"
    assert documented - expected == set(), "documented settings that do not exist"


def test_topic_table_matches_the_declaration() -> None:
    lines: list[str] = []
    topic_table(CommonSettings(), emit=lines.append)
    assert "\n".join(lines) in README
