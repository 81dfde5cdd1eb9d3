"""The examples in docstrings are tests too: every module of the package is walked, so a new
module's examples run without being listed here."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import rflens

MODULES = sorted(m.name for m in pkgutil.walk_packages(rflens.__path__, "rflens.") if not m.name.endswith("__main__"))


def test_the_walk_finds_the_layers():
    assert {"rflens.engine.families", "rflens.methods.gradient", "rflens.plot.fields", "rflens.viewer.scene"} <= set(MODULES)


@pytest.mark.parametrize("module", ["rflens"] + MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
