"""The examples in docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["rflens", "rflens.engine.analyze", "rflens.engine.field", "rflens.models.names", "rflens.engine.probe",
                                    "rflens.methods.gradient", "rflens.methods.spread", "rflens.methods.images", "rflens.models.checkpoints",
                                    "rflens.methods.scan", "rflens.methods.occlusion", "rflens.methods.segment", "rflens.models.adapt",
                                    "rflens.viewer", "rflens.viewer.scene", "rflens.viewer.server", "rflens.methods",
                                    "rflens.methods.running", "rflens.cli.common"])
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
