"""Names of a model's values: the FX tracer and interpreter that name every node as torchvision's
``get_graph_node_names`` does, and the forward hooks that name every module call."""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from typing import TYPE_CHECKING

import torch
from torch import fx, nn

from .metacopy import attributes_kept

if TYPE_CHECKING:
    from .trace import Flow



class Leaf:
    """Mixin: FX keeps a module of this class as one node, as it keeps torch.nn's own modules
    (the float twins of quantized modules stand where torch.ao's leaves stood)."""


def _tracer():
    """torchvision's NodePathTracer, also noting the output node of every non-leaf module."""
    from torchvision.models.feature_extraction import NodePathTracer, _set_default_tracer_kwargs

    class Tracer(NodePathTracer):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.module_outputs: list[tuple[str, object]] = []
            self._last_index: dict[str, int] = {}
            self.thread = threading.get_ident()

        def _get_node_qualname(self, module_qualname, node):
            # NodePathTracer's naming, with a dict instead of a scan of all names so far
            name = module_qualname
            if node.op != "call_module":
                name = (name + "." if name else "") + str(node)
            if re.match(r".+_[0-9]+$", name) is not None:
                name = name.rsplit("_", 1)[0]
            index = self._last_index.get(name)
            self._last_index[name] = 0 if index is None else index + 1
            return name if index is None else f"{name}_{index + 1}"

        def call_module(self, m, forward, args, kwargs):
            # torch.fx patches nn.Module.__call__ process-wide while it traces: another thread's
            # forward passes here and runs as it would have
            if threading.get_ident() != self.thread:
                return forward(*args, **kwargs)
            out = super().call_module(m, forward, args, kwargs)
            qual = self.path_of_module(m)
            if not self.is_leaf_module(m, qual):
                self.module_outputs.append((qual, out))
            return out

        def getattr(self, attr, attr_val, parameter_proxy_cache):
            if threading.get_ident() != self.thread:
                return attr_val
            return super().getattr(attr, attr_val, parameter_proxy_cache)

    return Tracer(**_set_default_tracer_kwargs({"leaf_modules": [Leaf]}))


class _Graph(fx.GraphModule):
    def recompile(self):  # an Interpreter runs the graph: its Python code (a third of FX's time) is never used
        return None


_TRACING = threading.Lock()  # one FX trace at a time: each patches nn.Module for the whole process


def fx_graph(model: nn.Module):
    """(GraphModule, node -> name, module name -> output node) or None where FX cannot trace."""
    tracer = _tracer()
    try:
        with _TRACING, attributes_kept(model):
            graph = tracer.trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: no FX names
        return None
    gm = _Graph(tracer.root, graph, model.__class__.__name__)
    names = dict(tracer.node_to_qualname)
    modules: list[tuple[str, fx.Node]] = []
    for qual, out in tracer.module_outputs:
        if isinstance(out, fx.Proxy):
            modules.append((qual, out.node))
    return gm, names, modules


class Interp(fx.Interpreter):
    """Runs an FX graph, reporting each node's value under its feature-extraction name."""

    def __init__(self, gm, names: dict, modules: dict, emit, flow: Flow | None):
        super().__init__(gm)
        self.extra_traceback = False  # keep rflens' messages as they are
        self.names, self.modules, self.emit, self.flow = names, modules, emit, flow

    def call_function(self, target, args, kwargs):
        # FX hands a node's list arguments over as immutable lists; a wrapped function of the
        # model's own may change the list it gets (torchvision's swin3d sets window sizes in place)
        return super().call_function(target, _mutable(args), _mutable(kwargs))

    def run_node(self, n):
        name = self.names.get(n)
        if self.flow is not None and n.op != "call_module":
            self.flow.current_node = name.rsplit(".", 1)[0] if name and "." in name else ""
        try:
            value = super().run_node(n)
        finally:
            if self.flow is not None:
                self.flow.current_node = None
        if name is not None and n.op != "placeholder":
            if n.op == "call_module":
                op = type(self.module.get_submodule(n.target)).__name__
            elif n.op == "call_function":
                op = getattr(n.target, "__name__", str(n.target))
            else:
                op = str(n.target)
            self.emit(name, value, op, name.rsplit(".", 1)[0] if "." in name else "")
            for qual, kind in self.modules.get(n, []):
                self.emit(qual, value, kind, qual)
        return value


def _mutable(value):
    """``value`` with FX's immutable lists and dicts made ordinary ones, at any depth (named
    tuples and PyTorch's return types stay what they are)."""
    if isinstance(value, list):
        return [_mutable(v) for v in value]
    if type(value) is tuple:
        return tuple(_mutable(v) for v in value)
    if isinstance(value, dict):
        return {k: _mutable(v) for k, v in value.items()}
    return value


@contextlib.contextmanager
def hooked(model: nn.Module, pre, post):
    """``pre(module, args, qual)`` before and ``post(module, args, output, qual)`` after every
    call of every submodule (TorchScript ones take no hooks), ``post`` even when the call raises."""
    def after(mod, args, out, qual):  # returns None: a hook's result would replace the output
        post(mod, args, out, qual)
    handles = []
    for qual, m in model.named_modules():
        if qual and not isinstance(m, torch.jit.ScriptModule):
            handles.append(m.register_forward_pre_hook(functools.partial(pre, qual=qual)))
            handles.append(m.register_forward_hook(functools.partial(after, qual=qual), always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def module_hooks(model: nn.Module, emit, flow: Flow | None):
    """Report every module call's output (``name``, ``name_1``, ... for repeated calls)."""
    calls: dict[str, int] = {}

    def pre(mod, args, qual):
        if flow is not None:
            flow.module_stack.append(qual)

    def post(mod, args, output, qual):
        if flow is not None and flow.module_stack:
            flow.module_stack.pop()
        n = calls.get(qual, 0)
        calls[qual] = n + 1
        emit(qual if n == 0 else f"{qual}_{n}", output, type(mod).__name__, qual)
    with hooked(model, pre, post):
        yield
