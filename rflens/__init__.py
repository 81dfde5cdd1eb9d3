"""rflens: exact receptive fields for PyTorch models.

>>> import torchvision, rflens
>>> analysis = rflens.analyze(torchvision.models.resnet50(weights=None), (3, 224, 224))
>>> analysis["layer4"].rf_size, analysis["layer4"].stride
((427, 427), (32, 32))
"""

from __future__ import annotations

from .adapt import adapt
from .api import analyze
from .errors import (InputTooSmallError, LayerNotFoundError, ModelNotFoundError, RFLensError,
                     TraceError, UnitError, UnsupportedOpError)
from .field import Analysis, Layer, Unit
from .models import load_model
from .gradient import EffectiveField, GradientField, effective_field, gradient_field
from .occlusion import EmpiricalField, EmpiricalLayer, Occluder, empirical_field
from .scan import Scan, top_images
from .segment import Segment, segment

__all__ = [
    "analyze", "load_model", "adapt", "gradient_field", "effective_field", "top_images", "empirical_field", "segment", "Occluder",
    "Analysis", "Layer", "Unit", "GradientField", "EffectiveField", "Scan",
    "EmpiricalField", "EmpiricalLayer", "Segment",
    "RFLensError", "UnsupportedOpError", "TraceError", "InputTooSmallError", "LayerNotFoundError",
    "UnitError", "ModelNotFoundError",
]
__version__ = "0.1.0"
