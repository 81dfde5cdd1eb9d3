"""The theoretical receptive field: the input pixels each unit of each layer structurally depends
on, computed exactly from one run of the model on meta tensors.

``analyze`` traces the model (``trace``), applying to each aten op the rule its row of the op
table names (``families``, ``ops``); rules pass tensor *layouts* (``layout``: which node and unit
each element reads) and build *nodes* (``geometry``: exact per-axis dependency terms and hulls).
``field`` turns the result into ``Analysis``, ``Layer`` and ``Unit``; ``probe`` is the brute-force
gradient oracle everything here is tested against.

>>> import torchvision
>>> from rflens.engine import analyze
>>> analyze(torchvision.models.vgg16(), (3, 224, 224))["features.29"].rf_size
(196, 196)
"""

from .analyze import analyze, parse_input_size
from .analysis import Analysis
from .field import Layer, Unit

__all__ = ["analyze", "parse_input_size", "Analysis", "Layer", "Unit"]
