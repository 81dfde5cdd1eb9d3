"""Where models come from: names, files, checkpoints, and adapting a model to one input and output.

>>> from rflens.models import load_model
>>> load_model("resnet18").fc.weight.device.type   # built on the meta device: no weights read
'meta'
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .adapt import adapt, parse_model_inputs
    from .checkpoints import load_weights
    from .names import build_model, default_input_size, load_model, parse_model_args

# imported on first use (rflens._lazy), as rflens itself: the CLI parses its arguments without torch
_LAZY = {
    "adapt": ".adapt", "parse_model_inputs": ".adapt",
    "load_weights": ".checkpoints",
    "build_model": ".names", "default_input_size": ".names", "load_model": ".names", "parse_model_args": ".names",
}


__all__ = ["load_model", "build_model", "default_input_size", "adapt", "load_weights", "parse_model_args",
           "parse_model_inputs"]

_lazy.install(__name__, _LAZY)
