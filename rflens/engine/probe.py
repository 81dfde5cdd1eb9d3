"""The brute-force oracle: receptive fields from gradients of a positive copy of the model.

The copy has positive weights, positive float64 inputs, and every op that could zero or cancel
a gradient replaced by a positive surrogate with the same dependency structure: activations
and eval-mode batch norm become the identity, max becomes sum (max pooling: a sum over the same
window), softmax and norms become "x plus the mean over the same dims", subtraction becomes
addition.  Then d(unit)/d(input) is nonzero exactly on the unit's structural support.

This is what the analytic engine is tested against, and the fallback for models it cannot
follow.  It is slow: one forward and backward per batch of units.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..deprecation import renamed
from ..errors import LayerNotFoundError, RFLensError
from .families import BY_FUNCTION, Gradient, Structure, function_name, functions
from .field import Unit, UnitLike, grid_index
from .trace import execute, fx_graph

def _dims(x: torch.Tensor, dim) -> list[int]:
    if dim is None:
        return list(range(x.ndim))
    if isinstance(dim, int):
        return [dim % x.ndim]
    return [d % x.ndim for d in dim]


def _window_sum(x: torch.Tensor, kernel, stride, padding, dilation, out_shape) -> torch.Tensor:
    nd = len(out_shape)
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    c = x.shape[1]
    w = torch.ones((c, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    # extra zeros on the far side reproduce ceil_mode's last partial window
    extra = []
    for i in range(nd):
        need = (out_shape[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1
        have = x.shape[2 + i] + 2 * padding[i]
        extra.append(max(0, need - have))
    pad = []
    for i in reversed(range(nd)):
        pad += [padding[i], padding[i] + extra[i]]
    y = conv(F.pad(x, pad), w, stride=stride, dilation=dilation, groups=c)
    return y[(slice(None), slice(None)) + tuple(slice(0, n) for n in out_shape)]


def _ntuple(v, n):
    if v is None:
        return None
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    return v * n if len(v) == 1 else v


# ops run as their identity: pointwise ops whose derivative may vanish (casts keep no torch
# function in the table, so they run as they are)
# copies (clone, contiguous, detach) promise a memory layout that later views rely on, and
# change no value: they run as they are
COPIES = frozenset(BY_FUNCTION["clone"].functions)
IDENTITY = functions(Gradient.PASSES, Gradient.ZERO_DERIVATIVE, Gradient.CONSTANT,
                     structure=Structure.POINTWISE) - COPIES
# ops whose result the probe cannot make positive: which elements pass is chosen by value
REFUSED = functions(Gradient.SELECTS)

StandIn = Callable[[Callable, tuple, dict, bool], object]
STAND_INS: dict[str, StandIn] = {}
"""A positive structural twin per torch function of the op table's signed and max-routing rows:
``stand_in(func, args, kwargs, inplace)`` returns the twin's value, or ``NotImplemented`` where
the op as it is already keeps every dependency (a sum of positives, a positive exponent)."""


def stand_in(*names: str):
    def register(fn: StandIn) -> StandIn:
        for n in names:
            if n in STAND_INS:
                raise RuntimeError(f"the probe has two stand-ins for '{n}'")
            STAND_INS[n] = fn
        return fn
    return register


@stand_in("batch_norm")
def _batch_norm(func, args, kwargs, inplace):
    x = args[0]
    if not kwargs.get("training", _arg(args, 5, False)):
        return x * 1.0  # eval mode: a per-channel affine map
    return x + x.mean(dim=[0] + list(range(2, x.ndim)), keepdim=True)


@stand_in("pow", "pow_")
def _pow(func, args, kwargs, inplace):
    if len(args) > 1 and not isinstance(args[1], torch.Tensor) and args[1] <= 0:
        return args[0] * 1.0
    return NotImplemented


@stand_in("sub", "sub_", "rsub", "subtract", "subtract_")
def _sub(func, args, kwargs, inplace):
    a, b = args[0], args[1]
    b = abs(b) if not isinstance(b, torch.Tensor) else b
    if inplace:
        return a.add_(b)
    return a + b if isinstance(a, torch.Tensor) else b + a


@stand_in("div", "div_", "truediv", "true_divide", "divide")
def _div(func, args, kwargs, inplace):
    a, b = args[0], args[1]
    if isinstance(b, torch.Tensor):
        return a.mul_(b) if inplace else a * b
    return a.div_(abs(b)) if inplace else a / abs(b)


@stand_in("rtruediv")
def _rtruediv(func, args, kwargs, inplace):
    return args[0] * abs(args[1])


@stand_in("mul", "mul_", "multiply", "multiply_")
def _mul(func, args, kwargs, inplace):
    a, b = args[0], args[1]
    if not isinstance(b, torch.Tensor):
        return a.mul_(abs(b)) if inplace else a * abs(b)
    if isinstance(a, torch.Tensor) and (a.requires_grad or b.requires_grad or a.is_floating_point()):
        # a sum has the same dependencies as a product without squaring magnitudes
        # (gates multiplied block after block would overflow float64)
        return a.add_(b) if inplace else a + b
    return NotImplemented


@stand_in("maximum", "minimum", "fmax", "fmin")
def _maximum(func, args, kwargs, inplace):
    return args[0] + args[1]


@stand_in("where")
def _where(func, args, kwargs, inplace):
    if len(args) != 3:
        return NotImplemented
    parts = [a for a in args[1:] if isinstance(a, torch.Tensor)]
    out = parts[0] * 1.0
    for p in parts[1:]:
        out = out + p
    return out  # the condition is boolean: it carries no gradient either way


@stand_in("masked_fill", "masked_fill_")
def _masked_fill(func, args, kwargs, inplace):
    return args[0] if inplace else args[0] * 1.0


@stand_in("amax", "amin", "max", "min")
def _max(func, args, kwargs, inplace):
    if isinstance(_arg(args, 1, None), torch.Tensor):
        return NotImplemented  # torch.max(a, b) is maximum, which has its own stand-in in aten
    x, dim = args[0], kwargs.get("dim", _arg(args, 1, None))
    if dim is None or (isinstance(dim, (list, tuple)) and not dim):
        return x.sum()
    s = x.sum(dim=dim, keepdim=kwargs.get("keepdim", _arg(args, 2, False)))
    if function_name(func) in ("max", "min"):
        return torch.return_types.max((s, torch.zeros_like(s, dtype=torch.long)))
    return s


@stand_in("var", "std")
def _var(func, args, kwargs, inplace):
    x = args[0]
    dim = kwargs.get("dim", _arg(args, 1, None))
    return (x * x).mean(dim=_dims(x, dim), keepdim=kwargs.get("keepdim", False))


@stand_in("softmax", "_softmax", "log_softmax", "softmin")
def _softmax(func, args, kwargs, inplace):
    x = args[0]
    return x + x.mean(dim=kwargs.get("dim", _arg(args, 1, -1)), keepdim=True)


@stand_in("layer_norm", "rms_norm")
def _layer_norm(func, args, kwargs, inplace):
    x, shape = args[0], kwargs.get("normalized_shape", _arg(args, 1, None))
    return x + x.mean(dim=list(range(x.ndim - len(shape), x.ndim)), keepdim=True)


@stand_in("group_norm")
def _group_norm(func, args, kwargs, inplace):
    x, g = args[0], kwargs.get("num_groups", _arg(args, 1, None))
    xg = x.reshape(x.shape[0], g, -1)
    return (xg + xg.mean(dim=2, keepdim=True)).reshape(x.shape)


@stand_in("instance_norm")
def _instance_norm(func, args, kwargs, inplace):
    x = args[0]
    return x + x.mean(dim=list(range(2, x.ndim)), keepdim=True)


@stand_in("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices",
          "max_pool3d_with_indices")
def _max_pool(func, args, kwargs, inplace):
    x = args[0]
    real = func(*args, **kwargs)
    out = real[0] if isinstance(real, tuple) else real
    nd = x.ndim - 2 if x.ndim > 2 else 1
    names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"]
    vals = {n: kwargs.get(n, _arg(args, i + 1, None)) for i, n in enumerate(names)}
    k = _ntuple(vals["kernel_size"], nd)
    s = _ntuple(vals["stride"], nd) or k
    p = _ntuple(vals["padding"], nd) or [0] * nd
    d = _ntuple(vals["dilation"], nd) or [1] * nd
    unbatched = x.ndim == nd + 1
    xin = x.unsqueeze(0) if unbatched else x
    y = _window_sum(xin, k, s, p, d, list(out.shape[-nd:]))
    y = y[0] if unbatched else y
    return (y, real[1]) if isinstance(real, tuple) else y


@stand_in("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
          "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices")
def _adaptive_max_pool(func, args, kwargs, inplace):
    name = function_name(func)
    nd = int(name.split("pool")[1][0])
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[nd - 1]
    out = pool(args[0], kwargs.get("output_size", _arg(args, 1, None)))
    ret = kwargs.get("return_indices", _arg(args, 2, False))
    return (out, torch.zeros_like(out, dtype=torch.long)) if ret or "indices" in name else out


@stand_in("scaled_dot_product_attention")
def _attention(func, args, kwargs, inplace):
    q, k, v = args[:3]
    s = q @ k.transpose(-2, -1)
    s = s + s.mean(dim=-1, keepdim=True)
    return s @ v


class PositiveSurrogate(TorchFunctionMode):
    """Runs every op of the op table whose gradient could vanish or cancel as a positive
    structural twin: pointwise ops as the identity, the others by their ``STAND_INS`` entry."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _any_float(args, kwargs):
            # integer arithmetic (shapes an ONNX graph computes, indices) carries no gradient:
            # a twin would change its values
            return func(*args, **kwargs)
        name = function_name(func)
        inplace = name.endswith("_") and not name.startswith("_")
        if name in IDENTITY:
            x = args[0]
            return x if inplace else x * 1.0
        if name in STAND_INS:
            out = STAND_INS[name](func, args, kwargs, inplace)
            if out is not NotImplemented:
                return out
        if name in REFUSED:
            raise RFLensError(f"the probe cannot follow '{name}' (it selects by value)")
        return func(*args, **kwargs)


def _any_float(args, kwargs) -> bool:
    for a in (*args, *kwargs.values()):
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
                return True
    return False


def _arg(args, i, default):
    return args[i] if len(args) > i else default


def positive_copy(model: nn.Module, dtype=torch.float64) -> nn.Module:
    """A copy with every parameter positive: weights 1/fan-in, vectors ones."""
    m = copy.deepcopy(model)
    if any(p.device.type == "meta" for p in m.parameters()):
        m = m.to_empty(device="cpu")
    m = m.to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.fill_(1.0 / max(1, p[0].numel()))
            else:
                p.fill_(1.0)
        for b in m.buffers():
            if b.is_floating_point():
                b.copy_(b.abs().clamp_min(1e-3)) if b.numel() else None
    return m


class ProbeAnalysis:
    """Receptive fields by gradient probing, with the names of the analytic engine.

    >>> import torchvision, rflens
    >>> p = rflens.analyze(torchvision.models.alexnet(), (3, 224, 224), method="probe")
    >>> p["features.2"].unit((0, 0)).box
    ((0, 17), (0, 17))
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, ...], fx_names: bool = True,
                 device: str | torch.device | None = None):
        self.input_size = tuple(input_size)
        self.spatial = tuple(input_size[1:])
        self.k = len(self.spatial)
        self.device = torch.device(device) if device else (
            torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
        self.model = positive_copy(model).to(self.device)
        self.graph = fx_graph(self.model) if fx_names else None
        names: list[str] = []
        shapes: dict[str, tuple] = {}

        def emit(name, value, op, module):
            if isinstance(value, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(value.shape)
                names.append(name)
        with torch.no_grad():
            self._run(torch.ones((1, *input_size), dtype=torch.float64, device=self.device), emit)
        self._names, self._shapes = names, shapes

    @property
    def layers(self) -> list[str]:
        return list(self._names)

    def _run(self, x, emit):
        with PositiveSurrogate():
            return execute(self.model, x, emit, self.graph)

    def __getitem__(self, name: str) -> "ProbeLayer":
        return self.layer(name)

    def layer(self, name: str, spatial_dims: list[int] | None = None) -> "ProbeLayer":
        """A layer; ``spatial_dims`` says which output dims a unit indexes (default: the
        trailing spatial dims of an (N, C, *spatial) output, else none)."""
        if name not in self._shapes:
            raise LayerNotFoundError(name, self._names)
        return ProbeLayer(self, name, self._shapes[name], spatial_dims)

    def masks(self, name: str, units: list[tuple[int, ...]], batch: int = 16,
              spatial_dims: list[int] | None = None) -> list[np.ndarray]:
        """Support masks of several units of one layer, ``batch`` units per backward pass.

        A unit indexes ``spatial_dims`` of the layer's output (default: its last dims); it
        stands for every element at that position."""
        out: list[np.ndarray] = []
        for start in range(0, len(units), batch):
            chunk = units[start:start + batch]
            out += self.masks_many({name: (chunk, spatial_dims)})[name]
        return out

    def masks_many(self, requests: dict[str, tuple[list[tuple[int, ...]], list[int] | None]]
                   ) -> dict[str, list[np.ndarray]]:
        """Masks for units of several layers from one forward pass (one backward per layer)."""
        width = max(len(u) for u, _ in requests.values())
        gen = torch.Generator().manual_seed(0)
        x = torch.rand((width, *self.input_size), generator=gen, dtype=torch.float64) + 0.5
        x = x.to(self.device).requires_grad_(True)
        captured: dict[str, torch.Tensor] = {}

        def emit(n, value, op, module):
            if n in requests and n not in captured and isinstance(value, torch.Tensor):
                captured[n] = value
        self._run(x, emit)
        result = {}
        for i, (name, (units, spatial_dims)) in enumerate(requests.items()):
            y = captured[name]
            nd = y.ndim
            spatial = spatial_dims if spatial_dims is not None else (
                list(range(nd - len(units[0]), nd)) if units and units[0] else [])
            total = 0
            for b, u in enumerate(units):
                idx = [slice(None)] * nd
                idx[0] = b
                for d, j in zip(spatial, u):
                    idx[d] = j
                total = total + y[tuple(idx)].sum()
            (g,) = torch.autograd.grad(total, x, retain_graph=i < len(requests) - 1)
            g = g.abs().sum(dim=1).detach().cpu().numpy()
            result[name] = [g[b] > 0 for b in range(len(units))]
        return result


class ProbeLayer:
    """A layer of a ``ProbeAnalysis``: exact masks (and their boxes) from gradients."""

    def __init__(self, analysis: ProbeAnalysis, name: str, shape: tuple, spatial_dims=None):
        self.analysis, self.name, self.output_shape = analysis, name, shape
        k = analysis.k
        if spatial_dims is None:
            spatial_dims = list(range(2, len(shape))) if len(shape) == k + 2 else []
        self.spatial_dims = list(spatial_dims)
        self.grid_shape = tuple(shape[d] for d in self.spatial_dims)

    def index(self, unit: UnitLike = "center") -> tuple[int, ...]:
        """``unit`` checked against the grid, as a tuple; ``"center"`` or ``None``: the centre unit."""
        return grid_index(unit, self.grid_shape, self.name)

    def units(self, units: list[UnitLike], batch: int = 16) -> list[Unit]:
        """Several units' fields, ``batch`` units per backward pass."""
        units = [self.index(u) for u in units]
        res = []
        for u, mask in zip(units, self.analysis.masks(self.name, units, batch, self.spatial_dims)):
            box = _bbox(mask)
            center = tuple((a + b - 1) / 2 for a, b in box)
            res.append(Unit(self.name, u, mask, box, box, center))
        return res

    @renamed(index="unit")
    def unit(self, unit: UnitLike = "center") -> Unit:
        """One unit's field, as ``Layer.unit``: an index on the grid, or ``"center"`` (default).

        >>> import torch, rflens
        >>> p = rflens.analyze(torch.nn.Conv2d(1, 1, 3), (1, 9, 9), method="probe", fx_names=False)
        >>> p["output"].unit("center").box
        ((3, 6), (3, 6))
        """
        return self.units([unit])[0]


def _bbox(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    out = []
    for a in range(mask.ndim):
        proj = mask.any(axis=tuple(i for i in range(mask.ndim) if i != a))
        idx = np.flatnonzero(proj)
        out.append((int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0))
    return tuple(out)
