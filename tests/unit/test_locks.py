"""requirements/*.lock (what the images and `make install` install) agree with
pyproject.toml: every declared dependency is pinned, hashed and within its range, and the
serving lock is the train lock's versions without the extra. `make lock` re-resolves."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _pins(lock: str) -> dict[str, set[str]]:
    """Package -> pinned versions (a universal lock may pin one per Python version), and
    check that every pin carries hashes."""
    lines = (REPO / "requirements" / lock).read_text().splitlines()
    pins: dict[str, set[str]] = {}
    for i, line in enumerate(lines):
        if match := PIN.match(line):
            assert lines[i + 1].strip().startswith("--hash=sha256:"), f"{lock}: {line} unhashed"
            pins.setdefault(canonicalize_name(match[1]), set()).add(match[2])
    return pins


def _declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(s) for s in specs]


def test_every_dependency_is_pinned_within_its_declared_range() -> None:
    for lock, declared in (("serving.lock", _declared()),
                           ("train.lock", _declared() + _declared("train"))):  # fmt: skip
        pins = _pins(lock)
        for req in declared:
            versions = pins.get(canonicalize_name(req.name))
            assert versions, f"{lock} does not pin {req.name}: run `make lock`"
            assert all(req.specifier.contains(v) for v in versions), (lock, req, versions)


def test_serving_pins_the_train_locks_versions_and_nothing_of_the_extra() -> None:
    serving, train = _pins("serving.lock"), _pins("train.lock")
    assert serving, "no pins found"
    for name, versions in serving.items():
        assert versions <= train.get(name, set()), f"{name}: serving {versions} vs train"
    for req in _declared("train"):
        assert canonicalize_name(req.name) not in serving, f"serving.lock pins {req.name}"
