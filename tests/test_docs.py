"""The examples in docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["rflens", "rflens.api", "rflens.field", "rflens.models", "rflens.probe",
                                    "rflens.gradient", "rflens.spread", "rflens.images", "rflens.checkpoints",
                                    "rflens.scan", "rflens.occlusion", "rflens.segment", "rflens.adapt",
                                    "rflens.viewer", "rflens.viewer.scene", "rflens.viewer.server"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
