"""The gradient oracle's positive stand-ins: every op of the op table whose derivative could hide
a dependency (vanish, cancel or route to one element) run as a positive structural twin, and the
values kept within float64's range at any depth.

Pointwise rows run as the identity; signed and max-routing rows by their ``STAND_INS`` entry
(subtraction as addition, max as sum over the same window, softmax and norms as "x plus the
mean over the same dims"); rows that select by value are refused.  Only values that carry a
gradient (from the input or a weight) get a twin: the rest keep their real values.

>>> import torch
>>> x = torch.tensor([-1.0, 2.0], dtype=torch.float64, requires_grad=True)
>>> with PositiveSurrogate():
...     torch.relu(x).tolist(), torch.relu(x.detach()).tolist()
([-1.0, 2.0], [0.0, 2.0])
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import RFLensError
from .families import BY_FUNCTION, Gradient, Structure, function_name, functions
from .naming import hooked


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
    # pointwise in each tensor argument: their sum has the same dependencies, while x ** p
    # spreads element magnitudes apart exponentially (a per-tensor rescale cannot undo that)
    parts = [a for a in (args[0], kwargs.get("exponent", _arg(args, 1, None))) if isinstance(a, torch.Tensor)]
    if inplace:
        return args[0].add_(parts[1]) if len(parts) > 1 else args[0]
    return parts[0] + parts[1] if len(parts) > 1 else parts[0] * 1.0


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
        if not _carries_gradient(args, kwargs):
            # arithmetic on what depends neither on the input nor on a weight (shapes an ONNX
            # graph computes, indices, MViT's relative distances) carries no gradient: a twin
            # would change its values, and an index made from them would point elsewhere
            return func(*args, **kwargs)
        name = function_name(func)
        inplace = name.endswith("_") and not name.startswith("_")
        if name in ("pad", "constant_pad_nd"):
            args, kwargs = _finite_fill(name, args, kwargs)
        if name in IDENTITY:
            x = args[0]
            return x if inplace else x * 1.0
        if name in STAND_INS:
            out = STAND_INS[name](func, args, kwargs, inplace)
            if out is not NotImplemented:
                return out
        if name in REFUSED:
            raise SelectsByValue(f"the probe cannot follow '{name}' (it selects by value)")
        return func(*args, **kwargs)


# values an op makes from the input are kept within [2^-32, 2^32] in magnitude: far enough
# from float64's limits (2^±1022) that one op (a matmul of two such values, attention's stand-in)
# cannot leave its range, and wide enough that ordinary convolutional nets are never rescaled
_LOW, _HIGH = 2.0 ** -32, 2.0 ** 32


class SelectsByValue(RFLensError):
    """An op the probe cannot make positive: which elements pass is chosen by value."""


class Bounded(PositiveSurrogate):
    """``PositiveSurrogate`` whose values stay finite at any depth: each new tensor an op makes
    from the input is rescaled by a power of two (exact, positive, without gradient: it changes
    no dependency) when its largest magnitude leaves [2^-32, 2^32].  A value that is not finite
    is noted with the op and the modules running, and ``failure`` words it at the next named
    value (an FX node names its op's module even where no module hook runs)."""

    def __init__(self):
        super().__init__()
        self.modules: list[str] = []   # the modules running now, innermost last
        self.broken: tuple[str, str, str] | None = None   # (op, "inf" or "nan", module)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = super().__torch_function__(func, types, args, kwargs)
        inputs = [t for a in (*args, *kwargs.values()) for t in (a if isinstance(a, (list, tuple)) else (a,))]
        if isinstance(out, torch.Tensor):
            return self._bounded(out, func, inputs, "out" not in kwargs)
        if isinstance(out, tuple) and any(isinstance(t, torch.Tensor) for t in out):
            return type(out)([self._bounded(t, func, inputs, "out" not in kwargs) for t in out])
        return out

    def _bounded(self, t, func, inputs: list, fresh: bool):
        if not (isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()) or t._base is not None:
            return t   # no input dependency, or a view of a tensor already checked
        # aminmax: one pass and no temporary (abs().amax() copies the tensor: 10x the time)
        lo, hi = torch.stack(torch.aminmax(t.detach())).tolist() if t.numel() else (0.0, 0.0)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            if self.broken is None:
                value = "nan" if math.isnan(lo) or math.isnan(hi) else "inf"
                self.broken = (function_name(func), value, self.modules[-1] if self.modules else "")
            return t
        largest = max(-lo, hi)
        if _LOW <= largest <= _HIGH or largest == 0.0 or not fresh or any(t is a for a in inputs):
            # in-place results and tensors an op returns as they are alias what the caller
            # holds: only checked
            return t
        exponent = math.frexp(largest)[1]
        return t * math.ldexp(1.0, max(-1000, min(1000, -exponent)))

    def failure(self, name: str | None = None, module: str = "") -> RFLensError:
        """The error for the value that was not finite, first reported under ``name``."""
        op, value, running = self.broken or ("?", "?", "")
        module = running or module
        where = f"in module '{module}'" if module else "in the model's forward"
        named = f" (first reported as the value named '{name}')" if name else ""
        return no_answer("this model", f"its positive copy made {value} at op '{op}' {where}{named}, though every "
                          "value an op makes is rescaled into float64's range (in-place results are only checked: "
                          "a chain of them, or one op whose result alone leaves the range, still overflows)")


def _finite_fill(name: str, args, kwargs) -> tuple[tuple, dict]:
    """A padding op's arguments with an infinite fill made 0: timm's "same" max pools pad with
    -inf, which the pool's stand-in (a window sum) would carry on; a padded element depends on
    nothing whatever its value."""
    at = 3 if name == "pad" else 2
    value = kwargs.get("value", _arg(args, at, None))
    if value is None or isinstance(value, str) or math.isfinite(float(value)):
        return args, kwargs
    if "value" in kwargs:
        return args, {**kwargs, "value": 0.0}
    return (*args[:at], 0.0, *args[at + 1:]), kwargs


def no_answer(subject: str, why: str) -> RFLensError:
    return RFLensError(f"the gradient oracle cannot answer for {subject}: {why}. The analytic engine "
                       "(method='analytic') does not need the oracle; without it, its fields here are not checked.")


@contextlib.contextmanager
def module_stack(model: nn.Module, stack: list[str]):
    """``stack`` holds the qualified names of the modules running, innermost last."""
    def leave(mod, args, out, qual):
        if stack:
            stack.pop()
    with hooked(model, lambda mod, args, qual: stack.append(qual), leave):
        yield


def _carries_gradient(args, kwargs) -> bool:
    for a in (*args, *kwargs.values()):
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.requires_grad:
                return True
    return False


def _arg(args, i, default):
    return args[i] if len(args) > i else default


