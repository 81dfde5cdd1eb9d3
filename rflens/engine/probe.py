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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..deprecation import renamed
from ..errors import LayerNotFoundError, RFLensError
from .field import Unit, UnitLike, grid_index
from .trace import execute, fx_graph

_IDENTITY = set("""
relu relu6 hardtanh hardsigmoid hardswish silu gelu sigmoid tanh elu selu celu leaky_relu softplus
mish clamp clamp_min clamp_max clip abs neg negative sign sgn round floor ceil trunc exp log log1p
sqrt rsqrt reciprocal dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
threshold prelu logsigmoid softsign tanhshrink hardshrink softshrink erf sin cos nan_to_num
square rrelu
""".split())


def _name(func) -> str:
    n = getattr(func, "__name__", "")
    if n.startswith("__") and n.endswith("__"):
        n = n[2:-2]
        if n.startswith("i") and n[1:] in ("add", "sub", "mul", "truediv", "div"):
            n = n[1:] + "_"
    return n


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


class PositiveSurrogate(TorchFunctionMode):
    """Replaces ops whose gradient can vanish or cancel by positive structural twins."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not _any_float(args, kwargs):
            # integer arithmetic (shapes an ONNX graph computes, indices) carries no gradient:
            # a twin would change its values
            return func(*args, **kwargs)
        name = _name(func)
        base = name.rstrip("_")
        inplace = name.endswith("_") and not name.startswith("_")
        if base in _IDENTITY or (base == "batch_norm" and not kwargs.get("training", _arg(args, 5, False))):
            x = args[0]
            return x if inplace else x * 1.0
        if base in ("pow",) and len(args) > 1 and not isinstance(args[1], torch.Tensor) and args[1] <= 0:
            return args[0] * 1.0
        if base in ("sub", "rsub", "subtract"):
            a, b = args[0], args[1]
            b = abs(b) if not isinstance(b, torch.Tensor) else b
            if inplace:
                return a.add_(b)
            return a + b if isinstance(a, torch.Tensor) else b + a
        if base in ("truediv", "div", "true_divide", "divide"):
            a, b = args[0], args[1]
            if isinstance(b, torch.Tensor):
                return a.mul_(b) if inplace else a * b
            return a.div_(abs(b)) if inplace else a / abs(b)
        if base == "rtruediv":
            return args[0] * abs(args[1])
        if base in ("mul", "multiply") and not isinstance(args[1], torch.Tensor):
            return args[0].mul_(abs(args[1])) if inplace else args[0] * abs(args[1])
        if base in ("mul", "multiply") and isinstance(args[0], torch.Tensor) and isinstance(args[1], torch.Tensor):
            # a sum has the same dependencies as a product without squaring magnitudes
            # (gates multiplied block after block would overflow float64)
            a, b = args[0], args[1]
            if a.requires_grad or b.requires_grad or a.is_floating_point():
                return a.add_(b) if inplace else a + b
        if base in ("maximum", "minimum", "fmax", "fmin"):
            return args[0] + args[1]
        if base in ("where",) and len(args) == 3:
            parts = [a for a in args[1:] if isinstance(a, torch.Tensor)]
            out = parts[0] * 1.0
            for p in parts[1:]:
                out = out + p
            return out  # the condition is boolean: it carries no gradient either way
        if base in ("masked_fill",):
            return args[0] if inplace else args[0] * 1.0
        if base in ("amax", "amin", "max", "min") and not isinstance(_arg(args, 1, None), torch.Tensor):
            x, dim = args[0], kwargs.get("dim", _arg(args, 1, None))
            if dim is None or (isinstance(dim, (list, tuple)) and not dim):
                return x.sum()
            keep = kwargs.get("keepdim", _arg(args, 2, False))
            s = x.sum(dim=dim, keepdim=keep)
            if base in ("max", "min"):
                return torch.return_types.max((s, torch.zeros_like(s, dtype=torch.long)))
            return s
        if base in ("var", "std"):
            x = args[0]
            dim = kwargs.get("dim", _arg(args, 1, None))
            keep = kwargs.get("keepdim", False)
            return (x * x).mean(dim=_dims(x, dim), keepdim=keep)
        if base in ("softmax", "log_softmax", "_softmax"):
            x = args[0]
            dim = kwargs.get("dim", _arg(args, 1, -1))
            return x + x.mean(dim=dim, keepdim=True)
        if base == "layer_norm":
            x, shape = args[0], kwargs.get("normalized_shape", _arg(args, 1, None))
            return x + x.mean(dim=list(range(x.ndim - len(shape), x.ndim)), keepdim=True)
        if base == "rms_norm":
            x, shape = args[0], kwargs.get("normalized_shape", _arg(args, 1, None))
            return x + x.mean(dim=list(range(x.ndim - len(shape), x.ndim)), keepdim=True)
        if base == "group_norm":
            x, g = args[0], kwargs.get("num_groups", _arg(args, 1, None))
            n, c = x.shape[:2]
            xg = x.reshape(n, g, -1)
            return (xg + xg.mean(dim=2, keepdim=True)).reshape(x.shape)
        if base == "instance_norm":
            x = args[0]
            return x + x.mean(dim=list(range(2, x.ndim)), keepdim=True)
        if base == "batch_norm":
            x = args[0]
            return x + x.mean(dim=[0] + list(range(2, x.ndim)), keepdim=True)
        if base in ("max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                    "max_pool2d_with_indices", "max_pool3d_with_indices"):
            return self._max_pool(func, args, kwargs)
        if base in ("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
                    "adaptive_max_pool1d_with_indices", "adaptive_max_pool2d_with_indices",
                    "adaptive_max_pool3d_with_indices"):
            nd = int(base.split("pool")[1][0])
            pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[nd - 1]
            out = pool(args[0], kwargs.get("output_size", _arg(args, 1, None)))
            ret = kwargs.get("return_indices", _arg(args, 2, False))
            return (out, torch.zeros_like(out, dtype=torch.long)) if ret or "indices" in base else out
        if base == "scaled_dot_product_attention":
            q, k, v = args[:3]
            s = q @ k.transpose(-2, -1)
            s = s + s.mean(dim=-1, keepdim=True)
            return s @ v
        if base in ("topk", "sort", "argsort", "kthvalue", "nonzero", "unique", "item"):
            raise RFLensError(f"the probe cannot follow '{name}' (it selects by value)")
        return func(*args, **kwargs)

    def _max_pool(self, func, args, kwargs):
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
