"""The copy of a model that ``analyze`` traces, so that the user's module is never touched.

The trace used to swap a model's parameters for meta tensors while it ran; another thread
running the same model meanwhile saw meta parameters and failed.  It now runs on a structural
copy: new module objects (same classes, attribute dicts copied), meta tensors for the floating
parameters and buffers.  No weight is copied (a meta tensor has no data), so the copy takes
about as long as building the old swap did and no memory to speak of.
"""

from __future__ import annotations

import collections
import contextlib
import copy

import torch
from torch import fx, nn


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` to trace on meta tensors, sharing no mutable state with it.

    * every module is a new object of the same class; its attribute dict is copied, and the lists
      and dicts in it too (hooks, a forward's caches), so whatever the forward stores (a detector's
      anchors moved to the device it runs on, hooks rflens registers) lands on the copy;
    * floating parameters and buffers become meta tensors (the same meta tensor wherever the model
      ties one tensor to several places; a tensor already on meta is kept as it is);
    * integer ones are cloned: they are shapes and indices the forward reads (an ONNX Reshape's
      target shape), small, and keep their values;
    * tensors stored as plain attributes are shared: the trace reads them, moving them to meta op
      by op, as it always did;
    * TorchScript modules are kept as they are (with their real weights, which the dispatch mode
      moves to meta op by op): they cannot be copied without copying their weights.

    >>> import torchvision
    >>> real = torchvision.models.resnet18()
    >>> twin = meta_copy(real)
    >>> twin.conv1.weight.device.type, real.conv1.weight.device.type, twin.conv1 is real.conv1
    ('meta', 'cpu', False)
    """
    return _module(model, {})


def _module(m: nn.Module, memo: dict[int, object]) -> nn.Module:
    if id(m) in memo:
        return memo[id(m)]  # type: ignore[return-value]
    if isinstance(m, torch.jit.ScriptModule):
        memo[id(m)] = m
        return m
    new = object.__new__(type(m))
    memo[id(m)] = new
    state = {k: _attribute(v, memo) for k, v in vars(m).items()}
    state["_parameters"] = {k: _tensor(p, memo) for k, p in m._parameters.items()}
    state["_buffers"] = {k: _tensor(b, memo) for k, b in m._buffers.items()}
    state["_modules"] = {k: None if c is None else _module(c, memo) for k, c in m._modules.items()}
    new.__dict__.update(state)
    return new


def _attribute(value, memo: dict[int, object]):
    if isinstance(value, torch.Tensor):
        return memo.get(id(value), value)
    if type(value) in _CONTAINERS:  # a module's dozen hook dicts: their own copy is the fast one
        return value.copy()
    if isinstance(value, (list, dict)):
        return copy.copy(value)
    return value


_CONTAINERS = {list, dict, collections.OrderedDict}


def _tensor(t: torch.Tensor | None, memo: dict[int, object]) -> torch.Tensor | None:
    if t is None:
        return None
    if id(t) in memo:
        return memo[id(t)]  # type: ignore[return-value]
    if t.is_meta:
        new = t
    else:
        data = (torch.empty_like(t, device="meta") if t.is_floating_point() or t.is_complex()
                else t.detach().clone())
        new = nn.Parameter(data, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else data
    memo[id(t)] = new
    return new


@contextlib.contextmanager
def attributes_kept(model: nn.Module):
    """Put back every module attribute the forward sets while ``torch.fx`` traces it (a detector
    storing its anchors moved to the input's device): it would keep an FX ``Proxy`` there.  The
    tracer's own new attributes (tensor constants on the root) stay."""
    saved = [(m.__dict__, dict(m.__dict__)) for m in model.modules()]
    try:
        yield
    finally:
        for attrs, old in saved:
            for k, v in list(attrs.items()):
                if k in old and old[k] is not v:
                    attrs[k] = old[k]
                elif k not in old and isinstance(v, fx.Proxy):
                    del attrs[k]
