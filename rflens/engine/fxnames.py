"""Layer names where ``torch.fx`` can trace the model: every node as torchvision's
``get_graph_node_names`` names it (``layer1.0.add``), and the output node of every module."""

from __future__ import annotations

import re

from torch import fx, nn



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
            out = super().call_module(m, forward, args, kwargs)
            qual = self.path_of_module(m)
            if not self.is_leaf_module(m, qual):
                self.module_outputs.append((qual, out))
            return out

    return Tracer(**_set_default_tracer_kwargs({"leaf_modules": [Leaf]}))


def fx_graph(model: nn.Module):
    """(GraphModule, node -> name, module name -> output node) or None where FX cannot trace."""
    tracer = _tracer()
    try:
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


class _Graph(fx.GraphModule):
    def recompile(self):  # an Interpreter runs the graph: its Python code (a third of FX's time) is never used
        return None
