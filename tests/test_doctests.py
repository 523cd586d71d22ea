"""Every docstring example in the package runs (River-style: the example is the spec)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ("driftwire.schemas", "driftwire.detectors", "driftwire.streams")
MODULES = sorted(
    info.name
    for package in PACKAGES
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f"{package}.")
    if not info.name.endswith("__main__")  # running it is running the CLI
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
