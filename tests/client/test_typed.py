"""The client is typed for its callers: without a ``py.typed`` marker in the installed
package, mypy treats ``shardstats.client`` as untyped (every call ``Any``) in user code."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

import shardstats


def test_the_package_ships_a_py_typed_marker() -> None:
    assert resources.files(shardstats).joinpath("py.typed").is_file()
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["shardstats"]
