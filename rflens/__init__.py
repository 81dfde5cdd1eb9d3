"""rflens: exact receptive fields for PyTorch models.

>>> import torchvision, rflens
>>> analysis = rflens.analyze(torchvision.models.resnet50(weights=None), (3, 224, 224))
>>> analysis["layer4"].rf_size, analysis["layer4"].stride
((427, 427), (32, 32))
"""

from __future__ import annotations

from .engine.analyze import analyze, parse_input_size
from .engine.analysis import Analysis
from .engine.field import Layer, Unit
from .errors import (InputTooSmallError, LayerNotFoundError, LimitError, ModelNotFoundError, RFLensError,
                     TooLargeError, TraceError, UnitError, UnsupportedOpError)
from .methods.gradient import EffectiveField, GradientField, effective_field, gradient_field
from .methods.occlusion import EmpiricalField, EmpiricalLayer, Occluder, empirical_field
from .methods.scan import Scan, top_images
from .methods.segment import Segment, segment
from .models.adapt import adapt
from .models.names import load_model

__all__ = [
    "analyze", "parse_input_size", "load_model", "adapt", "gradient_field", "effective_field", "top_images",
    "empirical_field", "segment", "Occluder",
    "Analysis", "Layer", "Unit", "GradientField", "EffectiveField", "Scan", "EmpiricalField", "EmpiricalLayer",
    "Segment",
    "RFLensError", "UnsupportedOpError", "LimitError", "TraceError", "InputTooSmallError", "LayerNotFoundError",
    "UnitError", "ModelNotFoundError", "TooLargeError",
]
__version__ = "0.1.0"

from . import _moved  # the module paths of 0.1 (rflens.api, rflens.checkpoints, ...) work for one release

_moved.install()
