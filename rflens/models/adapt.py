"""Models whose forward takes several inputs or returns several tensors: ``adapt``.

rflens calls ``model(x)`` with one image batch and follows one input.  ``adapt`` gives any
model that calling convention: the other inputs are filled in (zeros of a given shape, or given
tensors), and one of several outputs is chosen.  Receptive fields are always those of the first
input; the extra inputs are constants to the analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import RFLensError

__all__ = ["adapt", "parse_model_inputs"]


def adapt(model: nn.Module, output: str | int | None = None,
          extra_inputs: Sequence | Mapping | None = None) -> nn.Module:
    """``model`` called as ``model(x, *extra)`` (or ``model(x, **extra)``) returning the output
    ``output`` (a dict key, or an index into a tuple, list or dict).

    Each extra input is a shape without the batch dimension (zeros of that shape are passed,
    one per item of the batch, in the dtype and on the device of ``x``) or a tensor without the
    batch dimension (repeated over the batch).  The returned module shares the model's
    submodules and weights, and keeps its layer names; the model itself is not changed.

    >>> import torch, rflens
    >>> class TwoHeads(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.conv = torch.nn.Conv2d(1, 2, 3)
    ...     def forward(self, x, scale):
    ...         y = self.conv(x) * scale
    ...         return {"logits": y.mean((2, 3)), "map": y}
    >>> net = rflens.adapt(TwoHeads(), output="map", extra_inputs=[(1, 1, 1)])
    >>> rflens.analyze(net, (1, 8, 8))["output"].rf_size
    (3, 3)
    """
    if output is None and not extra_inputs:
        return model
    positional, named = _split(extra_inputs)
    if isinstance(model, torch.jit.ScriptModule):
        return _Wrapper(model, output, positional, named)
    base = type(model)
    new = base.__new__(type(base.__name__, (base,), {"forward": _forward(base.forward),
                                                     "__module__": base.__module__,
                                                     "__qualname__": base.__qualname__}))
    new.__dict__.update(model.__dict__)
    new._buffers = dict(model._buffers)  # the given extra tensors are buffers of the copy alone
    _set_io(new, output, positional, named)
    return new


def _split(extra) -> tuple[list, dict]:
    if extra is None:
        return [], {}
    if isinstance(extra, Mapping):
        return [], dict(extra)
    if isinstance(extra, torch.Tensor) or (isinstance(extra, Sequence) and extra and isinstance(extra[0], int)):
        raise RFLensError("extra_inputs is a list of shapes or tensors (one per extra input), "
                          "e.g. [(1, 64, 64)], or a dict of them by argument name")
    return list(extra), {}


def _set_io(module: nn.Module, output, positional: list, named: dict) -> None:
    def spec(key: str, value):
        if isinstance(value, torch.Tensor):
            name = f"_rflens_extra_{key}"
            module.register_buffer(name, value.detach(), persistent=False)
            return ("tensor", name)
        try:
            shape = tuple(int(s) for s in value)
        except (TypeError, ValueError):
            raise RFLensError(f"extra input {key!r}: expected a shape (without the batch dimension) or a "
                              f"tensor, not {value!r}") from None
        return ("zeros", shape)
    module._rflens_io = (output, [spec(str(i), v) for i, v in enumerate(positional)],
                         {k: spec(k, v) for k, v in named.items()})


def _forward(base_forward):
    def forward(self, x):
        output, positional, named = self._rflens_io
        out = base_forward(self, x, *(_value(self, s, x) for s in positional),
                           **{k: _value(self, s, x) for k, s in named.items()})
        return select_output(out, output)
    return forward


def _value(module: nn.Module, spec, x):
    kind, what = spec
    if kind == "zeros":
        return x.new_zeros((x.shape[0], *what))
    t = getattr(module, what)
    return t.unsqueeze(0).expand(x.shape[0], *t.shape)


class _Wrapper(nn.Module):
    """For TorchScript, whose class cannot be extended from Python."""

    def __init__(self, model: nn.Module, output, positional: list, named: dict):
        super().__init__()
        self.model = model
        _set_io(self, output, positional, named)

    def forward(self, x):
        output, positional, named = self._rflens_io
        out = self.model(x, *(_value(self, s, x) for s in positional), **{k: _value(self, s, x)
                                                                         for k, s in named.items()})
        return select_output(out, output)


def select_output(out, key):
    """``out[key]`` for a dict (a key, or an index into its entries) or a tuple/list (an index)."""
    if key is None:
        return out
    if isinstance(out, torch.fx.Proxy):  # FX tracing through an opaque call: index symbolically
        return out[key]
    if isinstance(out, Mapping):
        if key in out:
            return out[key]
        index = _index(key)
        if index is not None and -len(out) <= index < len(out):
            return list(out.values())[index]
    elif isinstance(out, (tuple, list)):
        index = _index(key)
        if index is not None and -len(out) <= index < len(out):
            return out[index]
    elif isinstance(out, torch.Tensor):
        raise RFLensError(f"the model returns a single tensor ({_shape(out)}); there is no output {key!r} to choose")
    raise RFLensError(f"the model has no output {key!r}; it returns {describe_outputs(out)}")


def _index(key) -> int | None:
    if isinstance(key, int):
        return key
    try:
        return int(key)
    except (TypeError, ValueError):
        return None


def describe_outputs(out) -> str:
    """``a dict with 'boxes' (1x4), 'scores' (1x2)`` and the like, for error messages."""
    if isinstance(out, Mapping):
        return "a dict with " + ", ".join(f"{k!r} ({_shape(v)})" for k, v in out.items())
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)}: " + ", ".join(f"[{i}] ({_shape(v)})" for i, v in enumerate(out))
    return type(out).__name__


def _shape(v) -> str:
    if isinstance(v, torch.Tensor):
        return "x".join(map(str, v.shape)) or "scalar"
    return type(v).__name__


def parse_model_inputs(items: list[str] | None) -> list | dict | None:
    """CLI ``--model-input`` values: ``CxHxW`` (positional, in order) or ``NAME=CxHxW`` (by name),
    as ``adapt`` takes extra inputs.

    >>> parse_model_inputs(["mask=1x64x64"]), parse_model_inputs(["1x8"])
    ({'mask': (1, 64, 64)}, [(1, 8)])
    """
    if not items:
        return None
    positional, named = [], {}
    for item in items:
        name, _, shape = item.rpartition("=")
        try:
            dims = tuple(int(p) for p in shape.lower().split("x")) if shape.strip() else ()
        except ValueError:
            dims = None
        if dims is None or any(d < 1 for d in dims):
            raise RFLensError(f"--model-input {item!r}: expected a shape without the batch dimension, "
                              "e.g. 1x64x64, or NAME=1x64x64 for a keyword argument")
        if name:
            named[name.strip()] = dims
        else:
            positional.append(dims)
    if positional and named:
        raise RFLensError("--model-input: give every extra input by position (SHAPE) or every one by "
                          "name (NAME=SHAPE), not a mix")
    return named or positional
