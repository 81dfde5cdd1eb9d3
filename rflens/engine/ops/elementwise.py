"""Elementwise ops: one traced input read at the same element (activations, casts, eval-mode batch
norm), several read at the same element (add, mul, where, ...), overwrites and factories."""

from __future__ import annotations



from .registry import broadcast_to, constant, Op, out_shape, rule, union_of


# -------------------------------------------------------------------------------------------
# passthrough and elementwise

PASSTHROUGH = """
relu relu_ silu silu_ gelu gelu_ sigmoid sigmoid_ tanh tanh_ hardswish hardswish_ hardsigmoid
hardsigmoid_ hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu selu_ celu celu_ softplus
mish mish_ clamp clamp_ clamp_min clamp_min_ clamp_max clamp_max_ abs abs_ neg neg_ exp exp_ log
log_ log1p sqrt sqrt_ rsqrt rsqrt_ reciprocal reciprocal_ square sign sgn erf erf_ sin cos
floor ceil round trunc frac logical_not bitwise_not threshold threshold_ _to_copy clone alias
detach detach_ lift_fresh lift_fresh_copy contiguous _conj resolve_conj resolve_neg
native_dropout dropout feature_dropout alpha_dropout nan_to_num
isnan isinf isfinite logit rrelu_with_noise copy prelu _prelu_kernel
""".split()


@rule(*PASSTHROUGH)
def passthrough(op: Op):
    tr = op.t(op.args[0])
    if tr is None:
        return None
    shape = out_shape(op)
    first = broadcast_to(tr, shape) if tr.shape != shape else tr
    if isinstance(op.out, (tuple, list)):
        return [first] + [None] * (len(op.out) - 1)
    return first


ELEMENTWISE = """
add add_ sub sub_ rsub mul mul_ div div_ true_divide floor_divide maximum minimum fmax fmin where
masked_fill masked_fill_ pow pow_ addcmul addcmul_ addcdiv addcdiv_ lerp lerp_ eq ne gt lt ge le
logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor atan2 fmod remainder hypot
copysign xlogy heaviside
""".split()


@rule(*ELEMENTWISE)
def elementwise(op: Op):
    trs = [op.t(a) for a in list(op.args) + list(op.kwargs.values())]
    trs = [t for t in trs if t is not None]
    shape = out_shape(op)
    if len(trs) == 1:
        return broadcast_to(trs[0], shape)
    return union_of(op, trs, shape)


@rule("copy_")
def copy_(op: Op):
    src = op.t(op.args[1])
    shape = tuple(op.args[0].shape)
    if src is None:
        return constant(op, shape)
    return broadcast_to(src, shape)


@rule("fill_", "zero_", "normal_", "uniform_", "bernoulli_", "random_", "exponential_")
def overwrite(op: Op):
    return constant(op, tuple(op.args[0].shape))







FACTORIES = """
empty empty_like zeros zeros_like ones ones_like full full_like rand rand_like randn randn_like
randint randint_like arange linspace scalar_tensor new_empty new_zeros new_ones new_full
empty_strided new_empty_strided eye tensor _to_dense sym_size sym_stride
sym_numel sym_storage_offset size stride is_same_size _has_compatible_shallow_copy_type
""".split()


@rule(*FACTORIES)
def factory(op: Op):
    return None
