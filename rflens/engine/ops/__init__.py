"""The registry of op rules: how each aten op moves receptive fields.

A rule receives an ``Op`` (the call, its meta outputs, the module it ran in) and returns the
``Tracked`` layout of each output.  Which aten ops each rule follows is said once, in the op table
(``engine.families``).  Rules are grouped by what the op does:

* passthrough: elementwise with one traced input (activations, eval-mode batch norm, casts);
* elementwise: several traced inputs read at the same element (add, mul, where, ...);
* data movement: the same numpy op on the layout arrays (view, permute, slice, cat, pad, ...);
* spatial: a window per spatial dim (convolution, pooling, resizing, adaptive pooling);
* reductions and normalisation: every element along some dims; over spatial dims this is
  *global context* (global pooling, spatial norms, softmax over positions, attention).

An op with traced inputs and no rule raises ``UnsupportedOpError``: the engine never guesses.
"""

from __future__ import annotations

from ..families import TABLE
# importing the rule modules registers their rules
from . import elementwise, movement, reductions, refusals, spatial  # noqa: F401
from .registry import IMPLEMENTATIONS, RULES, Op, build_rules, constant_like, input_layout, lookup, rule
from .shapes import fast_meta

RULES.update(build_rules(TABLE, IMPLEMENTATIONS))

__all__ = ["RULES", "Op", "rule", "lookup", "constant_like", "input_layout", "fast_meta"]
