"""Elementwise ops: one traced input read at the same element (activations, casts, eval-mode batch
norm), several read at the same element (add, mul, where, ...), overwrites and factories."""

from __future__ import annotations



from .registry import broadcast_to, constant, Op, out_shape, rule, union_of


# -------------------------------------------------------------------------------------------
# passthrough and elementwise



@rule
def passthrough(op: Op):
    tr = op.t(op.args[0])
    if tr is None:
        return None
    shape = out_shape(op)
    first = broadcast_to(tr, shape) if tr.shape != shape else tr
    if isinstance(op.out, (tuple, list)):
        return [first] + [None] * (len(op.out) - 1)
    return first




@rule
def elementwise(op: Op):
    trs = [op.t(a) for a in list(op.args) + list(op.kwargs.values())]
    trs = [t for t in trs if t is not None]
    shape = out_shape(op)
    if len(trs) == 1:
        return broadcast_to(trs[0], shape)
    return union_of(op, trs, shape)


@rule
def copy_(op: Op):
    src = op.t(op.args[1])
    shape = tuple(op.args[0].shape)
    if src is None:
        return constant(op, shape)
    return broadcast_to(src, shape)


@rule
def overwrite(op: Op):
    return constant(op, tuple(op.args[0].shape))









@rule
def factory(op: Op):
    return None
