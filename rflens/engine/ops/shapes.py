"""Output shapes without meta kernels for the most common ops (the kernels' Python decompositions
cost more than the geometry); anything else runs its meta kernel."""

from __future__ import annotations


import torch

from ..families import TABLE, Gradient
from .registry import int_list


# -------------------------------------------------------------------------------------------
# shapes without meta kernels for the most common ops (the kernels' Python decompositions cost
# more than the geometry); anything else runs its meta kernel


# unary ops with one result of their input's shape and dtype: not booleans, casts, copy (its
# shape is its source's) or the ops that also return a mask or buffer
_UNARY = {n.rstrip("_") for e in TABLE if e.rule == "passthrough" and e.gradient is not Gradient.NONE
          for n in e.aten} - {"native_dropout", "log_sigmoid_forward", "_to_copy", "copy"}


def fast_meta(func, args, kwargs):
    name = func._opname
    overload = func._overloadname
    if name.endswith("_") and name[:-1] in _UNARY and not kwargs:
        return args[0]
    if name in _UNARY and overload == "default" and not kwargs:
        return torch.empty_like(args[0])
    if name in ("add_", "mul_") and overload == "Tensor" and isinstance(args[1], torch.Tensor) \
            and torch.broadcast_shapes(args[0].shape, args[1].shape) == args[0].shape and not kwargs:
        return args[0]
    if name in ("native_batch_norm", "_native_batch_norm_legit_no_training") and not (
            name == "native_batch_norm" and args[5]):
        x = args[0]
        c = x.shape[1]
        return torch.empty_like(x), x.new_empty((c,)), x.new_empty((c,))
    if name == "convolution" and not kwargs:
        return _conv_meta(*args)
    if name in ("add", "sub", "mul", "div") and overload in ("Tensor", "Scalar") and len(args) == 2 and (
            "alpha" not in kwargs or len(kwargs) == 1) and set(kwargs) <= {"alpha"}:
        a, b = args
        shape = torch.broadcast_shapes(a.shape, b.shape) if isinstance(b, torch.Tensor) else a.shape
        return torch.empty(shape, dtype=torch.result_type(a, b), device="meta")
    if name in ("mm", "addmm", "bmm") and not kwargs:
        a, b = (args[1], args[2]) if name == "addmm" else (args[0], args[1])
        if a.shape[-1] == b.shape[-2]:
            return torch.empty((*a.shape[:-1], b.shape[-1]), dtype=a.dtype, device="meta")
    if name == "native_layer_norm" and not kwargs:
        x, n = args[0], len(args[1])
        stats = (*x.shape[: x.ndim - n], *([1] * n))
        return torch.empty_like(x), x.new_empty(stats), x.new_empty(stats)
    return None


def _conv_meta(x, w, b, stride, padding, dilation, transposed, output_padding, groups):
    nd = x.ndim - 2
    if isinstance(padding, str) or x.ndim < 3:
        return None
    stride, padding, dilation = int_list(stride, nd), int_list(padding, nd), int_list(dilation, nd)
    output_padding = int_list(output_padding, nd)
    ks = w.shape[2:]
    if transposed:
        cout = w.shape[1] * groups
        sizes = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1
                 for n, s, p, d, k, op in zip(x.shape[2:], stride, padding, dilation, ks, output_padding)]
    else:
        cout = w.shape[0]
        sizes = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, s, p, d, k in zip(x.shape[2:], stride, padding, dilation, ks)]
    if any(n < 1 for n in sizes) or x.shape[1] != (w.shape[0] if transposed else w.shape[1] * groups):
        return None  # the real kernel raises its own message
    return torch.empty((x.shape[0], cout, *sizes), dtype=x.dtype, device=x.device)
