"""Where models come from: names, files, checkpoints, and adapting a model to one input and output.

>>> from rflens.models import load_model
>>> load_model("resnet18").fc.weight.device.type   # built on the meta device: no weights read
'meta'
"""

from .adapt import adapt, parse_model_inputs
from .checkpoints import load_weights
from .names import build_model, default_input_size, load_model, parse_model_args

__all__ = ["load_model", "build_model", "default_input_size", "adapt", "load_weights", "parse_model_args",
           "parse_model_inputs"]
