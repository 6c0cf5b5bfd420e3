"""The package list in pyproject.toml names every package of the tree, so a wheel holds all of llmvirt."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_the_wheel() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "llmvirt").rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)
