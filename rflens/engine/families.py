"""What rflens knows about each op, spelled once: one row per op, on two axes.

**Structure** — how the op's output elements depend on its input elements.  It picks the analytic
rule (``engine/ops``) and how incremental re-inference recomputes the op (``methods/incremental``).

**Gradient** — how the op's derivative can hide a dependency that its structure has.  It picks the
gradient oracle's positive stand-in (``engine/probe``) and the cause the gradient explainer gives
for the pixels a real gradient misses (``methods/gradient``).

Each row names the op three ways: its aten overload packets (what the analytic trace sees), the
names its torch functions, ``Tensor`` methods and operators have in ``__torch_function__`` (what the
oracle and the explainer see; FX graphs call the same functions), and the ``nn.Module`` classes
that run it (what incremental re-inference sees), with the analytic rule that follows it.  An op
missing here is unknown to every consumer at once, and a test checks that all four read the same
rows — so an op cannot be followed by one and refused by another.

>>> from torch import nn
>>> row = module_entry(nn.Softshrink)
>>> row.structure.label, row.gradient.label, row.aten, row.rule
('pointwise', 'zero-derivative', ('softshrink',), 'passthrough')
>>> sorted(functions(Gradient.MAX_ROUTING))[:3]
['adaptive_max_pool1d', 'adaptive_max_pool1d_with_indices', 'adaptive_max_pool2d']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from torch import nn


class _Family(Enum):
    """A family of ops: a short label for messages and what its members have in common."""

    def __init__(self, label: str, meaning: str):
        self.label, self.meaning = label, meaning


class Structure(_Family):
    """How an op's output elements depend on its input elements."""

    POINTWISE = ("pointwise", "each output element reads the same element of its one traced input")
    PER_POSITION = ("per-position", "each output element reads several channels at its own position")
    ELEMENTWISE = ("elementwise", "each output element reads the same (broadcast) element of several inputs")
    WINDOWED = ("windowed", "each output position reads a window of positions along every spatial dim")
    MOVEMENT = ("movement", "elements are moved, copied or dropped, never combined")
    REDUCTION = ("reduction", "each output reads every element along some dims (over positions: global context)")
    FACTORY = ("factory", "a new value that depends on no traced input")
    VALUE_SELECTED = ("value-selected", "which elements it reads depends on tensor values")
    UNFOLLOWED = ("unfollowed", "the positions it reads are not followed by rflens yet")


class Gradient(_Family):
    """How an op's derivative can hide a dependency that its structure has."""

    PASSES = ("passes", "the derivative is nonzero wherever the op depends on its input")
    ZERO_DERIVATIVE = ("zero-derivative", "the derivative is exactly 0 on part of the line (ReLU family)")
    CONSTANT = ("constant", "the derivative is 0 everywhere (rounding, signs)")
    MAX_ROUTING = ("max-routing", "the gradient reaches one element of the many it chooses from")
    SIGNED = ("signed", "terms can cancel (differences, quotients, products, normalisation by statistics)")
    NONE = ("none", "no gradient flows by construction (booleans, indices, fills)")
    SELECTS = ("selects", "the elements that pass are chosen by value")


@dataclass(frozen=True)
class Entry:
    """One op: its structure and gradient families, the analytic rule that follows it, and its
    names as aten packets, torch functions and module classes."""

    structure: Structure
    gradient: Gradient
    rule: str | None  # None: the op reaches aten as other ops (softsign is abs, add and div)
    aten: tuple[str, ...]
    functions: tuple[str, ...]
    modules: tuple[type, ...]


def _row(structure: Structure, gradient: Gradient, rule: str | None, aten: str, functions: str = "",
         modules: tuple[type, ...] = ()) -> Entry:
    return Entry(structure, gradient, rule if aten else None, tuple(aten.split()), tuple(functions.split()), modules)


def _unary(gradient: Gradient, name: str, *modules: type, aten: str | None = None,
           functions: str | None = None) -> Entry:
    """A pointwise op whose aten packets and torch functions are ``name`` and ``name_``."""
    both = f"{name} {name}_"
    return _row(Structure.POINTWISE, gradient, "passthrough", both if aten is None else aten,
                both if functions is None else functions, modules)


P, E, W, M, R, F, V, U = (Structure.POINTWISE, Structure.ELEMENTWISE, Structure.WINDOWED, Structure.MOVEMENT,
                          Structure.REDUCTION, Structure.FACTORY, Structure.VALUE_SELECTED, Structure.UNFOLLOWED)
PASSES, ZERO, CONST, MAX, SIGNED, NONE, SELECTS = (
    Gradient.PASSES, Gradient.ZERO_DERIVATIVE, Gradient.CONSTANT, Gradient.MAX_ROUTING, Gradient.SIGNED,
    Gradient.NONE, Gradient.SELECTS)

TABLE: tuple[Entry, ...] = (
    # -- pointwise: activations and elementwise maths --------------------------------------------
    _unary(PASSES, "sigmoid", nn.Sigmoid),
    _unary(PASSES, "tanh", nn.Tanh),
    _unary(PASSES, "gelu", nn.GELU),
    _unary(PASSES, "silu", nn.SiLU),
    _unary(PASSES, "mish", nn.Mish),
    _unary(PASSES, "elu", nn.ELU),
    _unary(PASSES, "selu", nn.SELU),
    _unary(PASSES, "celu", nn.CELU),
    _unary(PASSES, "leaky_relu", nn.LeakyReLU),
    _unary(PASSES, "rrelu", nn.RReLU, aten="rrelu_with_noise"),
    _unary(PASSES, "prelu", nn.PReLU, aten="prelu _prelu_kernel", functions="prelu"),
    _unary(PASSES, "softplus", nn.Softplus, aten="softplus"),
    _unary(PASSES, "log_sigmoid", nn.LogSigmoid, aten="log_sigmoid_forward", functions="log_sigmoid"),
    _unary(PASSES, "softsign", nn.Softsign, aten="", functions="softsign"),      # x / (1 + |x|) in aten
    _unary(PASSES, "tanhshrink", nn.Tanhshrink, aten="", functions="tanhshrink"),  # x - tanh(x) in aten
    _unary(PASSES, "abs"), _unary(PASSES, "neg", functions="neg neg_ negative negative_"),
    _unary(PASSES, "exp"), _unary(PASSES, "log"), _unary(PASSES, "log1p", aten="log1p"),
    _unary(PASSES, "sqrt"), _unary(PASSES, "rsqrt"), _unary(PASSES, "reciprocal"),
    _unary(PASSES, "square", aten="square"), _unary(PASSES, "erf"), _unary(PASSES, "sin", aten="sin"),
    _unary(PASSES, "cos", aten="cos"), _unary(PASSES, "logit", aten="logit"),
    _unary(PASSES, "frac", aten="frac"), _unary(PASSES, "nan_to_num", aten="nan_to_num"),
    _unary(PASSES, "dropout", nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
           nn.FeatureAlphaDropout, aten="native_dropout dropout feature_dropout alpha_dropout",
           functions="dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout"),
    # copies, casts and aliases; casts keep no torch function here, so the oracle runs them as they are
    _unary(PASSES, "clone", nn.Identity, aten="_to_copy clone alias detach detach_ lift_fresh lift_fresh_copy "
           "contiguous _conj resolve_conj resolve_neg copy", functions="clone contiguous detach"),
    _unary(ZERO, "relu", nn.ReLU),
    _unary(ZERO, "relu6", nn.ReLU6, aten="", functions="relu6"),                 # hardtanh in aten
    _unary(ZERO, "hardtanh", nn.Hardtanh),
    _unary(ZERO, "hardsigmoid", nn.Hardsigmoid),
    _unary(ZERO, "hardswish", nn.Hardswish),
    _unary(ZERO, "clamp", functions="clamp clamp_ clip clip_"),
    _unary(ZERO, "clamp_min"), _unary(ZERO, "clamp_max"),
    _unary(ZERO, "threshold", nn.Threshold, functions="threshold threshold_ _threshold"),
    _unary(ZERO, "softshrink", nn.Softshrink, aten="softshrink", functions="softshrink"),
    _unary(ZERO, "hardshrink", nn.Hardshrink, aten="hardshrink", functions="hardshrink"),
    _unary(CONST, "floor", aten="floor"), _unary(CONST, "ceil", aten="ceil"),
    _unary(CONST, "round", aten="round"), _unary(CONST, "trunc", aten="trunc"),
    _unary(CONST, "sign", aten="sign"), _unary(CONST, "sgn", aten="sgn"),
    _unary(CONST, "bitwise_not", aten="bitwise_not", functions=""),
    _unary(NONE, "isnan", aten="isnan isinf isfinite logical_not", functions=""),
    _row(Structure.PER_POSITION, PASSES, None, "", "local_response_norm", (nn.LocalResponseNorm,)),
    # eval mode (how rflens runs every model): a per-channel affine map; in training mode the rule
    # and the oracle follow the batch statistics over positions
    _row(P, SIGNED, "batch_norm", "native_batch_norm _native_batch_norm_legit _native_batch_norm_legit_no_training "
         "_native_batch_norm_legit_functional batch_norm", "batch_norm", (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)),

    # -- elementwise: several inputs at the same element -----------------------------------------
    _row(E, PASSES, "elementwise", "add add_", "add add_"),
    _row(E, SIGNED, "elementwise", "sub sub_ rsub", "sub sub_ rsub subtract subtract_"),
    _row(E, SIGNED, "elementwise", "mul mul_", "mul mul_ multiply multiply_"),
    _row(E, SIGNED, "elementwise", "div div_ true_divide", "div div_ truediv true_divide divide rtruediv"),
    _row(E, SIGNED, "elementwise", "pow pow_", "pow pow_"),
    _row(E, SIGNED, "elementwise", "where", "where"),
    _row(E, SIGNED, "elementwise", "masked_fill masked_fill_", "masked_fill masked_fill_"),
    _row(E, MAX, "elementwise", "maximum minimum fmax fmin", "maximum minimum fmax fmin"),
    _row(E, PASSES, "elementwise", "floor_divide addcmul addcmul_ addcdiv addcdiv_ lerp lerp_ atan2 fmod "
         "remainder hypot copysign xlogy heaviside"),
    _row(E, NONE, "elementwise", "eq ne gt lt ge le logical_and logical_or logical_xor bitwise_and bitwise_or "
         "bitwise_xor", "eq ne gt lt ge le logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor"),

    # -- windowed: convolution, pooling, resizing ------------------------------------------------
    _row(W, PASSES, "convolution", "convolution _convolution convolution_overrideable _convolution_mode "
         "cudnn_convolution mkldnn_convolution conv2d conv1d conv3d",
         "conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d",
         (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)),
    _row(W, PASSES, "pool", "avg_pool1d avg_pool2d avg_pool3d _mkldnn_pool", "avg_pool1d avg_pool2d avg_pool3d",
         (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)),
    _row(W, MAX, "pool", "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
         "max_pool3d_with_indices",
         "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices",
         (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)),
    _row(W, PASSES, "adaptive_pool", "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
         "_adaptive_avg_pool1d _adaptive_avg_pool2d _adaptive_avg_pool3d",
         "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d",
         (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)),
    _row(W, MAX, "adaptive_pool", "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d",
         "adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool1d_with_indices "
         "adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices",
         (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)),
    _row(W, PASSES, "pool", "", "lp_pool1d lp_pool2d lp_pool3d", (nn.LPPool1d, nn.LPPool2d, nn.LPPool3d)),
    _row(W, PASSES, "upsample", "upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d "
         "_upsample_nearest_exact2d _upsample_nearest_exact3d upsample_linear1d upsample_bilinear2d "
         "upsample_trilinear3d upsample_bicubic2d", "interpolate upsample upsample_nearest upsample_bilinear",
         (nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)),

    # -- movement ---------------------------------------------------------------------------------
    _row(M, PASSES, "view", "view _unsafe_view reshape _reshape_alias view_copy flatten unflatten _reshape_copy",
         "view reshape flatten unflatten", (nn.Flatten, nn.Unflatten)),
    _row(M, PASSES, "permute", "permute permute_copy", "permute"),
    _row(M, PASSES, "transpose", "transpose transpose_ transpose_copy swapaxes t t_ numpy_T mT movedim"),
    _row(M, PASSES, "expand", "expand expand_copy expand_as broadcast_to"),
    _row(M, PASSES, "squeeze", "unsqueeze unsqueeze_ unsqueeze_copy squeeze squeeze_ squeeze_copy"),
    _row(M, PASSES, "slice", "slice slice_copy"),
    _row(M, PASSES, "select", "select select_copy"),
    _row(M, PASSES, "narrow", "narrow narrow_copy"),
    _row(M, PASSES, "split", "split split_with_sizes unsafe_split unsafe_split_with_sizes split_copy "
         "split_with_sizes_copy chunk unsafe_chunk tensor_split unbind unbind_copy"),
    _row(M, PASSES, "cat", "cat concat concatenate stack hstack vstack", "cat concat concatenate"),
    _row(M, PASSES, "copy_", "copy_"),
    _row(M, PASSES, "constant_pad", "constant_pad_nd pad", "pad",
         (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)),
    _row(M, PASSES, "reflection_pad", "reflection_pad1d reflection_pad2d reflection_pad3d", "",
         (nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d)),
    _row(M, PASSES, "replication_pad", "replication_pad1d replication_pad2d replication_pad3d", "",
         (nn.ReplicationPad1d, nn.ReplicationPad2d, nn.ReplicationPad3d)),
    _row(M, PASSES, "circular_pad", "_pad_circular circular_pad1d circular_pad2d circular_pad3d", "",
         (nn.CircularPad1d, nn.CircularPad2d, nn.CircularPad3d)),
    _row(M, PASSES, "flip", "flip"),
    _row(M, PASSES, "roll", "roll"),
    _row(M, PASSES, "repeat", "repeat"),
    _row(M, PASSES, "pixel_shuffle", "pixel_shuffle pixel_unshuffle", "pixel_shuffle pixel_unshuffle",
         (nn.PixelShuffle, nn.PixelUnshuffle)),
    _row(M, NONE, "embedding", "embedding"),
    _row(M, PASSES, "as_strided", "as_strided as_strided_ as_strided_copy"),

    # -- reductions and normalisation ------------------------------------------------------------
    _row(R, PASSES, "reduction", "mean sum prod logsumexp linalg_vector_norm norm nansum nanmean"),
    _row(R, SIGNED, "reduction", "var std var_mean std_mean", "var std"),
    _row(R, MAX, "reduction", "amax amin max min aminmax", "amax amin max min"),
    _row(R, MAX, "reduction", "median nanmedian mode"),
    _row(R, NONE, "reduction", "argmax argmin any all count_nonzero"),
    _row(R, SIGNED, "softmax", "_softmax softmax _log_softmax log_softmax _safe_softmax",
         "softmax _softmax log_softmax softmin", (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Softmax2d)),
    _row(R, SIGNED, "layer_norm", "native_layer_norm layer_norm", "layer_norm", (nn.LayerNorm,)),
    _row(R, SIGNED, "group_norm", "native_group_norm group_norm", "group_norm", (nn.GroupNorm,)),
    # batch norm over a view, and squares, means and rsqrt: no aten packets of their own
    _row(R, SIGNED, "batch_norm", "", "instance_norm", (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)),
    _row(R, SIGNED, "reduction", "", "rms_norm", (nn.RMSNorm,)),
    _row(R, PASSES, "matmul", "mm addmm bmm baddbmm matmul linear _addmm_activation addmv mv dot vdot outer",
         "", (nn.Linear,)),
    _row(R, SIGNED, "attention", "_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention "
         "_scaled_dot_product_efficient_attention _scaled_dot_product_attention_math scaled_dot_product_attention "
         "_scaled_dot_product_cudnn_attention _scaled_dot_product_fused_attention_overrideable",
         "scaled_dot_product_attention"),
    _row(R, PASSES, "cumulative", "cumsum cumprod logcumsumexp"),
    _row(R, MAX, "cumulative", "cummax cummin"),

    # -- values from nowhere: factories, fills, shapes -------------------------------------------
    _row(F, NONE, "factory", "empty empty_like zeros zeros_like ones ones_like full full_like rand rand_like randn "
         "randn_like randint randint_like arange linspace scalar_tensor new_empty new_zeros new_ones new_full "
         "empty_strided new_empty_strided eye tensor _to_dense sym_size sym_stride sym_numel sym_storage_offset "
         "size stride is_same_size _has_compatible_shallow_copy_type"),
    _row(F, NONE, "overwrite", "fill_ zero_ normal_ uniform_ bernoulli_ random_ exponential_"),

    # -- refused: the engine never guesses --------------------------------------------------------
    _row(V, PASSES, "data_dependent", "index _unsafe_index index_select gather take_along_dim index_put "
         "index_put_ scatter scatter_ scatter_add masked_select masked_scatter _local_scalar_dense _unique2"),
    _row(V, SELECTS, "data_dependent", "nonzero item sort topk argsort kthvalue unique",
         "nonzero item sort topk argsort kthvalue unique"),
    _row(M, PASSES, "im2col", "im2col", "", (nn.Unfold,)),
    _row(M, PASSES, "col2im", "col2im", "", (nn.Fold,)),  # overlapping patches summed: a union
    _row(U, PASSES, "patches", "unfold unfold_backward"),
    _row(U, PASSES, "unsupported_resampling", "_upsample_bilinear2d_aa _upsample_bicubic2d_aa grid_sampler_2d "
         "grid_sampler grid_sampler_3d affine_grid_generator", "grid_sample affine_grid"),
)


def _index(key) -> dict:
    out: dict = {}
    for e in TABLE:
        for name in key(e):
            if name in out:
                raise RuntimeError(f"{name!r} is spelled in two rows of the op table "
                                   f"(rules '{out[name].rule}' and '{e.rule}'): one op, one row")
            out[name] = e
    return out


BY_ATEN: dict[str, Entry] = _index(lambda e: e.aten)
BY_FUNCTION: dict[str, Entry] = _index(lambda e: e.functions)
BY_MODULE: dict[type, Entry] = _index(lambda e: e.modules)


def functions(*gradients: Gradient, structure: Structure | None = None) -> frozenset[str]:
    """The torch function names of the rows with one of ``gradients`` (and ``structure``)."""
    return frozenset(f for e in TABLE if e.gradient in gradients and structure in (None, e.structure)
                     for f in e.functions)


def function_name(func) -> str:
    """The name a torch function, ``Tensor`` method or operator has in this table: its
    ``__name__``, an operator's without its dunders (``__iadd__`` is ``add_``).

    >>> import operator, torch
    >>> function_name(torch.Tensor.__iadd__), function_name(operator.truediv), function_name(torch.relu)
    ('add_', 'truediv', 'relu')
    """
    n = getattr(func, "__name__", "")
    if n.startswith("__") and n.endswith("__"):
        n = n[2:-2]
        if n.startswith("i") and n[1:] in ("add", "sub", "mul", "truediv", "div"):
            n = n[1:] + "_"
    return n


def module_entry(cls: type) -> Entry | None:
    """The row of a module class, or of its nearest listed base class (a subclass of
    ``nn.Conv2d`` runs a convolution), or None."""
    for base in cls.__mro__:
        if base in BY_MODULE:
            return BY_MODULE[base]
    return None
