"""rflens: exact receptive fields for PyTorch models.

>>> import torchvision, rflens
>>> analysis = rflens.analyze(torchvision.models.resnet50(weights=None), (3, 224, 224))
>>> analysis["layer4"].rf_size, analysis["layer4"].stride
((427, 427), (32, 32))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _lazy
from .errors import (InputTooSmallError, LayerNotFoundError, LimitError, ModelNotFoundError, RFLensError,
                     TooLargeError, TraceError, UnitError, UnsupportedOpError)

# Imported on first use (rflens._lazy): torch and torchvision take seconds to import, and
# `rflens --help`, `rflens --version` and argument errors need neither.
_LAZY = {
    "analyze": ".engine.analyze", "parse_input_size": ".engine.analyze", "Analysis": ".engine.analysis",
    "Layer": ".engine.field", "Unit": ".engine.field",
    "EffectiveField": ".methods.gradient", "GradientField": ".methods.gradient",
    "effective_field": ".methods.gradient", "gradient_field": ".methods.gradient",
    "EmpiricalField": ".methods.occlusion", "EmpiricalLayer": ".methods.occlusion", "Occluder": ".methods.occlusion",
    "empirical_field": ".methods.occlusion", "Scan": ".methods.scan", "top_images": ".methods.scan",
    "Segment": ".methods.segment", "segment": ".methods.segment", "adapt": ".models.adapt",
    "load_model": ".models.names", "RayExecutor": ".methods.distributed",
}
_SUBPACKAGES = ("engine", "methods", "models", "plot", "viewer", "cli", "files", "deprecation")

if TYPE_CHECKING:
    import torch

    from .engine.analysis import Analysis
    from .engine.analyze import analyze, parse_input_size
    from .engine.field import Layer, Unit
    from .methods.distributed import RayExecutor
    from .methods.gradient import EffectiveField, GradientField, effective_field, gradient_field
    from .methods.occlusion import EmpiricalField, EmpiricalLayer, Occluder, empirical_field
    from .methods.scan import Scan, top_images
    from .methods.segment import Segment, segment
    from .models.adapt import adapt
    from .models.names import load_model


def __getattr__(name: str):  # the subpackages, as after the eager imports of 0.1
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'rflens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


__all__ = [
    "analyze", "parse_input_size", "load_model", "adapt", "gradient_field", "effective_field", "top_images",
    "empirical_field", "segment", "Occluder", "RayExecutor",
    "Analysis", "Layer", "Unit", "GradientField", "EffectiveField", "Scan", "EmpiricalField", "EmpiricalLayer",
    "Segment",
    "RFLensError", "UnsupportedOpError", "LimitError", "TraceError", "InputTooSmallError", "LayerNotFoundError",
    "UnitError", "ModelNotFoundError", "TooLargeError", "widget",
]
__version__ = "0.1.0"


def widget(model: "torch.nn.Module", input_size=(3, 224, 224), **options) -> "Any":
    """The interactive viewer of ``model`` inline in a notebook (JupyterLab, VS Code, Colab): pick
    a layer, click a unit, see its exact field; no server to start.  Options: ``image``,
    ``layer``, ``unit``, ``channel``, ``name``, ``analysis`` (``rflens.viewer.widget.widget``).
    Needs anywidget: ``pip install 'rflens[notebook]'``.

    >>> import torchvision, rflens
    >>> view = rflens.widget(torchvision.models.resnet18(weights=None), (3, 224, 224))
    >>> view.layer, view.unit, view.field.box
    ('layer4', [3, 3], ((0, 224), (0, 224)))
    """
    from .viewer.widget import widget as show  # anywidget and the viewer load only when asked for
    return show(model, input_size, **options)


_lazy.install(__name__, _LAZY)

from . import _moved  # the module paths of 0.1 (rflens.api, rflens.checkpoints, ...) work for one release

_moved.install()
