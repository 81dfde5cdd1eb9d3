"""Quantized models, followed through their float twin.

A quantized model (torchvision's ``quantize=True`` builders, eager ``torch.ao.quantization.convert``,
FX ``convert_fx``, ``quantize_dynamic``) computes on quantized tensors with packed int8 weights and
scales read as Python numbers: nothing of it runs on meta tensors, and nothing of it has a gradient.
But every quantized op reads exactly the elements its float op reads: a quantized convolution has
its float twin's kernel, stride, padding, dilation and groups; quantize, dequantize and requantize
are pointwise.  So rflens analyses, and probes, the model's *float twin*: a copy in which

* every quantized module is its float counterpart with the same configuration and the dequantized
  weights (``nnq.Conv2d`` -> ``nn.Conv2d``, ``ConvReLU2d`` -> a conv followed by ReLU,
  ``Quantize``/``DeQuantize`` -> the identity), under the same qualified name;
* ``QFunctional`` (``skip_add.add``, ``cat.cat``) runs the float op;
* in FX graphs, ``torch.quantize_per_tensor``, ``Tensor.dequantize`` and ``torch.ops.quantized.*``
  call float functions, and packed weights become float parameters.

The twin's leaves stay leaves and its functions stay single FX nodes named as the quantized op
they stand for, so every layer has the name it has in the quantized model.  A quantized module
or op without a twin here is refused by name: the engine never guesses.

>>> import torch
>>> from torch.ao.nn import quantized as nnq
>>> q = torch.nn.Sequential(nnq.Quantize(0.1, 0, torch.quint8), nnq.Conv2d(3, 8, 3, stride=2), nnq.DeQuantize())
>>> twin = float_twin(q)
>>> [type(m).__name__ for m in twin], twin[1].stride, twin[1].weight.dtype
(['Quantize', 'Conv2d', 'DeQuantize'], (2, 2), torch.float32)
>>> float_twin(twin) is twin  # nothing quantized left
True
"""

from __future__ import annotations

import copy
import functools
from typing import Callable

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.intrinsic.quantized.dynamic as nniqd
import torch.ao.nn.quantized as nnq
import torch.ao.nn.quantized.dynamic as nnqd
import torch.ao.nn.quantized.reference as nnqr
from torch.ao.nn.quantized.reference.modules.utils import ReferenceQuantizedModule
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import skip_init
from torch.utils._pytree import tree_leaves

from ..errors import RFLensError
from .naming import Leaf

# where torch keeps modules that compute on quantized tensors (or quantize their weights on the fly)
_QUANTIZED_PACKAGES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.ao.nn.sparse.quantized")
# float modules of those packages: they run as they are
_FLOAT_ALREADY = (nnq.FloatFunctional, nnq.FXFloatFunctional)


# -- float functions standing in for quantized ops ---------------------------------------------

def _single_node(name: str, fn: Callable) -> Callable:
    """``fn`` under the name of the quantized op it stands for; under FX tracing it records one
    ``call_function`` node of itself (so tracing the twin again names it as the quantized model)."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        proxy = next((a for a in tree_leaves((args, kwargs)) if isinstance(a, fx.Proxy)), None)
        if proxy is not None:
            return proxy.tracer.create_proxy("call_function", run, args, kwargs)
        return fn(*args, **kwargs)
    run.__name__ = run.__qualname__ = name
    run.__module__ = __name__
    return run


def _same(x, *qparams, **kw):
    return x


def _then_relu(fn: Callable) -> Callable:
    return lambda *args, **kwargs: F.relu(fn(*args, **kwargs))


def _binary(op: Callable) -> Callable:
    # quantized::add(qa, qb, scale, zero_point): the output's scale and zero point are arithmetic
    return lambda x, y, *qparams, **kw: op(x, y)


def _cat(xs, dim=0, scale=None, zero_point=None):
    return torch.cat(list(xs), dim)


# quantized::<name> -> its float function, same arguments (output scale and zero point ignored)
_ELEMENTWISE = {"add": _binary(torch.add), "mul": _binary(torch.mul), "add_scalar": _binary(torch.add),
                "mul_scalar": _binary(torch.mul), "matmul": _binary(torch.matmul), "cat": _cat}
OPS: dict[str, Callable] = {name: _single_node(name, fn) for name, fn in (
    *_ELEMENTWISE.items(), *((f"{n}_relu", _then_relu(fn)) for n, fn in _ELEMENTWISE.items() if n != "matmul"),
    ("quantize_per_tensor", _same), ("quantize_per_channel", _same), ("quantize_per_tensor_dynamic", _same),
    ("dequantize", _same))}
"""Float functions standing in for ``torch.ops.quantized.<name>``, ``torch.quantize_*`` and
``dequantize``, each named as the op it stands for."""

_CONVS = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d, "conv_transpose1d": F.conv_transpose1d,
          "conv_transpose2d": F.conv_transpose2d, "conv_transpose3d": F.conv_transpose3d}
# quantized::<name>(x, packed_weights, ...) -> float function of (x, weight, bias, **geometry)
PACKED: dict[str, Callable] = {name: _single_node(name, fn) for name, fn in (
    *_CONVS.items(), *((f"{n}_relu", _then_relu(fn)) for n, fn in _CONVS.items() if "transpose" not in n),
    ("linear", F.linear), ("linear_relu", _then_relu(F.linear)),
    ("linear_dynamic", F.linear), ("linear_relu_dynamic", _then_relu(F.linear)),
    ("linear_dynamic_fp16", F.linear), ("linear_relu_dynamic_fp16", _then_relu(F.linear)),
    *((f"{n}_dynamic", fn) for n, fn in _CONVS.items()))}
"""Float functions standing in for the quantized ops that read packed weights."""

# torch functions (not torch.ops.quantized) that quantize or dequantize
_TORCH_FUNCTIONS = {torch.quantize_per_tensor: "quantize_per_tensor", torch.quantize_per_channel: "quantize_per_channel",
                    torch.quantize_per_tensor_dynamic: "quantize_per_tensor_dynamic", torch.dequantize: "dequantize"}


# -- float modules standing in for quantized modules -------------------------------------------

class Quantize(Leaf, nn.Module):
    """Float twin of ``nnq.Quantize`` (and of a ``QuantStub`` converted): the identity."""

    def forward(self, x):
        return x


class DeQuantize(Leaf, nn.Module):
    """Float twin of ``nnq.DeQuantize``: the identity."""

    def forward(self, x):
        return x


def _fused(name: str, base: type, after: Callable, *, extra_input: bool = False) -> type:
    """A float module class ``name``: ``base``'s op, then ``after`` (and for ``ConvAdd``, plus
    the extra input), one FX leaf as the fused quantized module is."""
    def forward(self, x, *extra):
        y = base.forward(self, x)
        return after(self, y + extra[0] if extra_input else y)
    plus = " plus the extra input" if extra_input else ""
    then = "" if after is _identity else f", then {after.__doc__}"
    doc = f"Float twin of the fused quantized ``{name}``: ``{base.__name__}``{plus}{then}."
    return type(name, (Leaf, base), {"forward": forward, "__module__": __name__, "__doc__": doc})


def _relu(self, y):
    """ReLU"""
    return F.relu(y)


def _leaky_relu(self, y):
    """LeakyReLU"""
    return F.leaky_relu(y, self.negative_slope)


def _tanh(self, y):
    """tanh"""
    return torch.tanh(y)


def _identity(self, y):
    return y


ConvReLU1d = _fused("ConvReLU1d", nn.Conv1d, _relu)
ConvReLU2d = _fused("ConvReLU2d", nn.Conv2d, _relu)
ConvReLU3d = _fused("ConvReLU3d", nn.Conv3d, _relu)
ConvAdd2d = _fused("ConvAdd2d", nn.Conv2d, _identity, extra_input=True)
ConvAddReLU2d = _fused("ConvAddReLU2d", nn.Conv2d, _relu, extra_input=True)
LinearReLU = _fused("LinearReLU", nn.Linear, _relu)
LinearLeakyReLU = _fused("LinearLeakyReLU", nn.Linear, _leaky_relu)
LinearTanh = _fused("LinearTanh", nn.Linear, _tanh)
BNReLU2d = _fused("BNReLU2d", nn.BatchNorm2d, _relu)
BNReLU3d = _fused("BNReLU3d", nn.BatchNorm3d, _relu)


class QFunctional(nn.Module):
    """Float twin of ``nnq.QFunctional``: the same methods, each the float op (the quantized
    module's own observer child, the identity, stays where it was)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.scale, self.zero_point = original.scale, original.zero_point
        self.activation_post_process = nn.Identity()

    def forward(self, x):
        raise RuntimeError("QFunctional has no forward: call one of its ops (add, cat, ...)")

    def add(self, x, y):
        return self.activation_post_process(OPS["add"](x, y))

    def add_relu(self, x, y):
        return self.activation_post_process(OPS["add_relu"](x, y))

    def mul(self, x, y):
        return self.activation_post_process(OPS["mul"](x, y))

    def cat(self, x, dim: int = 0):
        return self.activation_post_process(OPS["cat"](x, dim=dim))

    def add_scalar(self, x, y):
        return OPS["add_scalar"](x, y)

    def mul_scalar(self, x, y):
        return OPS["mul_scalar"](x, y)

    def matmul(self, x, y):
        return OPS["matmul"](x, y)


def _dequantized(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    return t.dequantize() if t.is_quantized else t.detach().float()


def _with_weights(twin: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    twin.weight = nn.Parameter(_dequantized(weight), requires_grad=False)
    if bias is not None:
        twin.bias = nn.Parameter(_dequantized(bias), requires_grad=False)
    return twin


def _packed_conv(cls: type) -> Callable:
    """Twin of a quantized convolution: its geometry, its weights (packed) dequantized."""
    def build(m):
        bias = m.bias()
        geometry = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups,
                        bias=bias is not None, padding_mode=m.padding_mode)
        if m.transposed:
            geometry["output_padding"] = m.output_padding
        return _with_weights(skip_init(cls, m.in_channels, m.out_channels, m.kernel_size, **geometry),
                             m.weight(), bias)
    return build


def _packed_linear(cls: type) -> Callable:
    def build(m):
        bias = m.bias()
        twin = _with_weights(skip_init(cls, m.in_features, m.out_features, bias=bias is not None), m.weight(), bias)
        if hasattr(m, "negative_slope"):
            twin.negative_slope = m.negative_slope
        return twin
    return build


def _recast(cls: type) -> Callable:
    """Twin of a quantized module that subclasses its float class (``nnq.BatchNorm2d``,
    ``nnq.LayerNorm``, reference modules) and keeps its attributes and float parameters: a copy
    that runs ``cls``'s forward, so every setting (eps, affine, dims, slopes) is the original's."""
    def build(m):
        twin = copy.deepcopy(m)
        twin.__class__ = cls
        for name, p in list(twin.named_parameters(recurse=False)):
            setattr(twin, name, nn.Parameter(_dequantized(p), requires_grad=False))
        if isinstance(m, ReferenceQuantizedModule):  # its forward quantizes the weight on the fly
            twin.weight = nn.Parameter(m.get_weight().detach(), requires_grad=False)
        return twin
    return build


def _prelu(m):
    twin = nn.PReLU(m.num_parameters)
    twin.weight = nn.Parameter(_dequantized(m.weight), requires_grad=False)
    return twin


TWINS: dict[type, Callable[[nn.Module], nn.Module]] = {
    nnq.Quantize: lambda m: Quantize(), nnq.DeQuantize: lambda m: DeQuantize(), nnq.QFunctional: QFunctional,
    nnq.Conv1d: _packed_conv(nn.Conv1d), nnq.Conv2d: _packed_conv(nn.Conv2d), nnq.Conv3d: _packed_conv(nn.Conv3d),
    nnq.ConvTranspose1d: _packed_conv(nn.ConvTranspose1d), nnq.ConvTranspose2d: _packed_conv(nn.ConvTranspose2d),
    nnq.ConvTranspose3d: _packed_conv(nn.ConvTranspose3d),
    nnqd.Conv1d: _packed_conv(nn.Conv1d), nnqd.Conv2d: _packed_conv(nn.Conv2d), nnqd.Conv3d: _packed_conv(nn.Conv3d),
    nnqd.ConvTranspose1d: _packed_conv(nn.ConvTranspose1d), nnqd.ConvTranspose2d: _packed_conv(nn.ConvTranspose2d),
    nnqd.ConvTranspose3d: _packed_conv(nn.ConvTranspose3d),
    nniq.ConvReLU1d: _packed_conv(ConvReLU1d), nniq.ConvReLU2d: _packed_conv(ConvReLU2d),
    nniq.ConvReLU3d: _packed_conv(ConvReLU3d), nniq.ConvAdd2d: _packed_conv(ConvAdd2d),
    nniq.ConvAddReLU2d: _packed_conv(ConvAddReLU2d),
    nnq.Linear: _packed_linear(nn.Linear), nnqd.Linear: _packed_linear(nn.Linear),
    nniq.LinearReLU: _packed_linear(LinearReLU), nniqd.LinearReLU: _packed_linear(LinearReLU),
    nniq.LinearLeakyReLU: _packed_linear(LinearLeakyReLU), nniq.LinearTanh: _packed_linear(LinearTanh),
    nnq.BatchNorm2d: _recast(nn.BatchNorm2d), nnq.BatchNorm3d: _recast(nn.BatchNorm3d),
    nniq.BNReLU2d: _recast(BNReLU2d), nniq.BNReLU3d: _recast(BNReLU3d),
    nnq.LayerNorm: _recast(nn.LayerNorm), nnq.GroupNorm: _recast(nn.GroupNorm),
    nnq.InstanceNorm1d: _recast(nn.InstanceNorm1d), nnq.InstanceNorm2d: _recast(nn.InstanceNorm2d),
    nnq.InstanceNorm3d: _recast(nn.InstanceNorm3d),
    nnq.Hardswish: _recast(nn.Hardswish), nnq.ELU: _recast(nn.ELU), nnq.LeakyReLU: _recast(nn.LeakyReLU),
    nnq.Sigmoid: _recast(nn.Sigmoid), nnq.Softmax: _recast(nn.Softmax), nnq.Dropout: _recast(nn.Dropout),
    nnq.ReLU6: lambda m: nn.ReLU6(), nnq.PReLU: _prelu,
    nnqr.Conv1d: _recast(nn.Conv1d), nnqr.Conv2d: _recast(nn.Conv2d), nnqr.Conv3d: _recast(nn.Conv3d),
    nnqr.ConvTranspose1d: _recast(nn.ConvTranspose1d), nnqr.ConvTranspose2d: _recast(nn.ConvTranspose2d),
    nnqr.ConvTranspose3d: _recast(nn.ConvTranspose3d), nnqr.Linear: _recast(nn.Linear),
}
"""Quantized module class (exactly; a subclass may compute more) -> its float twin's builder."""


# -- the twin ----------------------------------------------------------------------------------

def _is_quantized_module(m: nn.Module) -> bool:
    return any(c.__module__.startswith(_QUANTIZED_PACKAGES) for c in type(m).__mro__) and not isinstance(m, _FLOAT_ALREADY)


def _quantized_op(target) -> str | None:
    """The name of a quantized op an FX node calls (``torch.ops.quantized.add`` -> ``add``)."""
    if target in _TORCH_FUNCTIONS:
        return _TORCH_FUNCTIONS[target]
    packet = getattr(target, "overloadpacket", target)
    namespace, _, name = getattr(packet, "_qualified_op_name", "").partition("::")
    return name if namespace == "quantized" else None


def _quantized_node(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target == "dequantize") or (
        n.op == "call_function" and _quantized_op(n.target) is not None)


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds a quantized module or (in an FX graph) calls a quantized op.

    >>> import torch
    >>> is_quantized(torch.nn.Conv2d(1, 1, 3)), is_quantized(torch.ao.nn.quantized.Conv2d(1, 1, 3))
    (False, True)
    """
    return any(_is_quantized_module(m) or (isinstance(m, fx.GraphModule) and any(map(_quantized_node, m.graph.nodes)))
               for m in model.modules())


def float_twin(model: nn.Module) -> nn.Module:
    """The float twin of a quantized ``model`` (see the module's docstring); ``model`` itself
    where nothing in it is quantized.  The twin has the quantized model's layer names and
    geometry, float weights (dequantized) and a gradient; ``model`` is not changed.

    >>> import torch, rflens
    >>> q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 2)))
    >>> type(q[0]).__name__, type(float_twin(q)[0]).__name__
    ('Linear', 'Linear')
    >>> float_twin(q)[0].weight.dtype
    torch.float32
    """
    if not is_quantized(model):
        return model
    memo: dict[int, object] = {}
    _twin_modules(model, "", memo)
    twin = copy.deepcopy(model, memo)
    for name, gm in twin.named_modules():
        if isinstance(gm, fx.GraphModule):
            _float_graph(gm, name)
    return twin


def _twin_modules(module: nn.Module, name: str, memo: dict) -> None:
    """Put each quantized module's twin in ``memo`` (deepcopy then uses it in its place)."""
    if _is_quantized_module(module):
        build = TWINS.get(type(module))
        if build is None:
            raise RFLensError(
                f"module '{name or type(module).__name__}' is a {type(module).__module__}.{type(module).__name__}, "
                "a quantized module rflens has no float twin for, so it cannot follow it exactly. "
                "Analyse the float model it was quantized from: quantization keeps every layer's geometry.")
        twin = build(module)
        twin.train(module.training)
        memo[id(module)] = twin
        return
    for child_name, child in module.named_children():
        _twin_modules(child, f"{name}.{child_name}" if name else child_name, memo)


def _float_graph(gm: fx.GraphModule, name: str) -> None:
    """Rewrite an FX graph's quantized ops into their float functions, in place."""
    graph = gm.graph
    for n in list(graph.nodes):
        if not _quantized_node(n):
            continue
        op = "dequantize" if n.op == "call_method" else _quantized_op(n.target)
        if op in OPS:
            n.op, n.target = "call_function", OPS[op]
        elif op in PACKED:
            _unpack(gm, n, op)
        else:
            where = f"the FX graph '{name}'" if name else "the model's FX graph"
            raise RFLensError(
                f"node '{n.name}' of {where} calls the quantized op '{n.target}', which rflens has no float "
                "twin for, so it cannot follow it exactly. Analyse the float model it was quantized from: "
                "quantization keeps every layer's geometry.")
    graph.lint()
    gm.recompile()


def _unpack(gm: fx.GraphModule, n: fx.Node, op: str) -> None:
    """``quantized::conv2d(x, packed, scale, zero_point)`` -> ``conv2d(x, weight, bias, ...)``.

    The packed weights become float buffers of the graph module: read as constants, as the
    packed ones were, they get no FX node names (and the oracle makes them positive too)."""
    x, packed_node = n.args[0], n.args[1]
    packed = _attribute(gm, packed_node.target)
    weight, bias = packed.unpack()
    stem = packed_node.target.replace(".", "_")
    gm.register_buffer(f"{stem}_weight", _dequantized(weight))
    gm.register_buffer(f"{stem}_bias", _dequantized(bias))
    with gm.graph.inserting_before(n):
        w = gm.graph.get_attr(f"{stem}_weight")
        b = gm.graph.get_attr(f"{stem}_bias") if bias is not None else None
    kwargs = {}
    if op.startswith("conv"):
        kwargs = dict(stride=packed.stride(), padding=packed.padding(), dilation=packed.dilation(), groups=packed.groups())
        if packed.transpose():
            kwargs["output_padding"] = packed.output_padding()
    qparams = [a for a in n.args[2:] if isinstance(a, fx.Node)]
    n.target, n.args, n.kwargs = PACKED[op], (x, w, b), kwargs
    for unused in (packed_node, *qparams):
        if not unused.users and unused.op == "get_attr":
            gm.graph.erase_node(unused)


def _attribute(root: nn.Module, path: str):
    for part in path.split("."):
        root = getattr(root, part)
    return root
