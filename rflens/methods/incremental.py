"""Exact incremental re-inference of a layer after a small change to the input (Krypton:
Nakandala, Kumar and Papakonstantinou, SIGMOD 2019).

An occluder changes a few pixels; every layer's output changes only inside the occluder's
projective field.  So the clean image's activations are computed once, and for each occluded
copy only the changed box of each node is recomputed, reading the rest from the clean cache.
Two facts make the boxes small:

* a windowed op (conv, pool) maps a changed input box to the output positions whose windows
  touch it; a pointwise op keeps the box; adding or concatenating two values takes the union;
* only the positions the probed units need are ever computed: each node's *needed* box is the
  union of the windows of what its consumers need (the units' receptive fields, per node), and
  a changed box is cut down to it.

Boxes of one batch share one size (the largest; boxes near a border are moved inward), so each
node is one batched call of the model's own module on a small tensor: exact, not an
approximation, up to float rounding of the different conv tiling.  What each node is comes from
its row of the op table (``engine.families``): pointwise and per-position ops, elementwise ops,
2-D convolutions and max/avg pools with zero padding (as modules), and concatenations along
channels are recomputed; any other node makes ``plan`` return the reason, and the caller falls
back to whole-image forwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import RFLensError
from ..engine.families import BY_FUNCTION, Structure, function_name, module_entry
from ..engine.naming import fx_graph
from ..engine.trace import evaluating

@dataclass(frozen=True)
class WindowedOp:
    """A windowed op's geometry along H and W, with the value its implicit padding holds."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    fill: float

    def reach(self, a: int) -> int:
        return (self.kernel[a] - 1) * self.dilation[a] + 1


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(module: nn.Module) -> WindowedOp | str:
    """The geometry of a supported windowed module, or why it is not supported."""
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"padding_mode={module.padding_mode!r}"
        if isinstance(module.padding, str):
            if module.padding == "valid":
                pad = (0, 0)
            else:  # "same": symmetric only when the dilated kernel is odd
                reach = [(k - 1) * d for k, d in zip(module.kernel_size, module.dilation)]
                if any(r % 2 for r in reach):
                    return "padding='same' with an even dilated kernel (asymmetric padding)"
                pad = (reach[0] // 2, reach[1] // 2)
        else:
            pad = _pair(module.padding)
        return WindowedOp(_pair(module.kernel_size), _pair(module.stride), pad, _pair(module.dilation), 0.0)
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return "return_indices=True"
        stride = module.stride if module.stride is not None else module.kernel_size
        return WindowedOp(_pair(module.kernel_size), _pair(stride), _pair(module.padding), _pair(module.dilation),
                      -math.inf)
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None or (
                not module.count_include_pad and module.padding not in (0, (0, 0))):
            return "ceil_mode, divisor_override or count_include_pad=False with padding"
        stride = module.stride if module.stride is not None else module.kernel_size
        return WindowedOp(_pair(module.kernel_size), _pair(stride), _pair(module.padding), (1, 1), 0.0)
    return f"{type(module).__name__} is not a windowed op this engine knows"


def _apply_window(module: nn.Module, x: torch.Tensor, padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``module`` on an already padded window (so with no padding of its own but ``padding``,
    at most its own, on both sides of each axis)."""
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, module.weight, module.bias, module.stride, padding, module.dilation, module.groups)
    if isinstance(module, nn.MaxPool2d):
        return F.max_pool2d(x, module.kernel_size, module.stride, padding, module.dilation)
    return F.avg_pool2d(x, module.kernel_size, module.stride, padding)


@dataclass
class _Region:
    """Where one node's value differs from the clean one, per batch element: boxes of one
    shared ``size`` at ``origin`` (B, 2), holding ``value`` (B, C, *size)."""

    origin: np.ndarray
    size: tuple[int, int]
    value: torch.Tensor


class Incremental:
    """Recomputes one layer of ``model`` for many occluded copies of one image.

    >>> import torch, torchvision
    >>> net = torchvision.models.alexnet().features.eval()
    >>> plan = Incremental.plan(net, "5")
    >>> x = torch.rand(1, 3, 224, 224)
    >>> clean = plan.prepare(x, [(6, 6)], [0])
    >>> patch = torch.zeros(1, 3, 11, 11)
    >>> got = plan.values([[100, 100]], patch)
    >>> xo = x.clone(); xo[..., 100:111, 100:111] = 0
    >>> torch.allclose(got[0, 0], net[:6](xo)[0, 0, 6, 6], atol=1e-5)
    True
    """

    def __init__(self, gm: fx.GraphModule, nodes: list[fx.Node], kinds: dict, target: fx.Node):
        self.gm, self.nodes, self.kinds, self.target = gm, nodes, kinds, target
        self.clean: dict[fx.Node, torch.Tensor] = {}
        self.needed: dict[fx.Node, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._padded: dict[tuple, torch.Tensor] = {}

    @classmethod
    def plan(cls, model: nn.Module, layer: str, graph=None) -> Incremental | str:
        """The engine for ``layer`` (a name as ``analyze`` gives it), or why there is none."""
        graph = graph if graph is not None else fx_graph(model)
        if graph is None:
            return "the model cannot be traced with torch.fx"
        gm, names, modules = graph
        target = next((n for n, name in names.items() if name == layer and n.op != "placeholder"), None)
        target = target or next((node for qual, node in modules if qual == layer), None)
        if target is None:
            return f"'{layer}' is not the output of a traced node"
        nodes, target = _unrolled(gm, target)
        wanted = {target}
        for n in reversed(nodes):
            if n in wanted:
                wanted.update(n.all_input_nodes)
        order = [n for n in nodes if n in wanted]
        inputs = [n for n in order if n.op == "placeholder"]
        if len(inputs) != 1:
            return "the layer depends on several inputs"
        varying = {inputs[0]}
        kinds: dict[fx.Node, str | WindowedOp] = {}
        for n in order:
            if n.op == "placeholder" or not any(a in varying for a in n.all_input_nodes):
                continue
            varying.add(n)
            kind = _kind(gm, n)
            if not isinstance(kind, WindowedOp) and kind not in ("pointwise", "binary", "cat"):
                where = n.target if n.op == "call_module" else n.name
                return f"'{where}' ({_describe(gm, n)}): {kind}"
            kinds[n] = kind
        return cls(gm, order, kinds, target)

    # -- one image ---------------------------------------------------------------------------

    def prepare(self, x: torch.Tensor, cells: list[tuple[int, int]], channels: list[int]) -> torch.Tensor:
        """Run the clean image ``x`` (1, C, H, W) once; returns the units' clean values and sets
        up the needed boxes for the units at ``cells`` (of the layer) and ``channels``."""
        env: dict[fx.Node, object] = {}
        with evaluating(self.gm):
            for n in self.nodes:
                env[n] = x.clone() if n.op == "placeholder" else self._run(n, env)
        self.clean = {n: v for n, v in env.items() if isinstance(v, torch.Tensor)}
        self._padded = {}
        out = self.clean[self.target]
        if out.ndim != 4:
            raise RFLensError(f"the layer's output has shape {tuple(out.shape)}, not (N, C, H, W)")
        self.cells = torch.tensor(cells, device=x.device).reshape(-1, 2)
        self.channels = torch.tensor(channels, device=x.device)
        self.needed = self._needed(cells)
        self.units = out[0, self.channels, self.cells[:, 0], self.cells[:, 1]]
        return self.units

    def values(self, corners, patches: torch.Tensor) -> torch.Tensor:
        """The units' values (B, units) on the clean image with ``patches`` (B, C, s, s) pasted
        at top-left ``corners`` (B, 2)."""
        src = next(n for n in self.nodes if n.op == "placeholder")
        origin = np.asarray(corners, dtype=np.int64).reshape(-1, 2)
        regions: dict[fx.Node, _Region | None] = {src: _Region(origin, tuple(patches.shape[2:]), patches.clone())}
        with evaluating(self.gm):
            for n in self.nodes:
                if n in self.kinds and n in self.needed:
                    regions[n] = self._step(n, regions)
        r = regions.get(self.target)
        out = self.units.expand(len(corners), -1).clone()
        if r is None:
            return out
        rel = self.cells[None] - torch.from_numpy(r.origin).to(self.cells.device)[:, None]  # (B, units, 2)
        inside = ((rel >= 0) & (rel < torch.tensor(r.size, device=rel.device))).all(-1)
        b = torch.arange(len(corners), device=rel.device)[:, None].expand_as(inside)
        got = r.value[b, self.channels[None].expand_as(inside), rel[..., 0].clamp(0, r.size[0] - 1),
                      rel[..., 1].clamp(0, r.size[1] - 1)]
        return torch.where(inside, got, out)

    # -- one unit's dependency cone ------------------------------------------------------------

    def cone(self, x: torch.Tensor, cell: tuple[int, int]) -> torch.Tensor:
        """The layer's channels (B, C) at ``cell`` for a batch ``x`` (B, C, H, W), each node
        computed only on the box of positions that one unit needs, from its inputs' boxes (with
        the padding of the maps' real borders): the whole forward's values at a fraction of the
        work, and differentiable.  The first call at a size runs one input whole, for the maps'
        sizes and the values that do not depend on the input."""
        self._sized(x, cell)
        src = next(n for n in self.nodes if n.op == "placeholder")
        boxes: dict[fx.Node, tuple[torch.Tensor, tuple[int, int]]] = {src: (x.clone(), (0, 0))}  # ops may write in place
        last = {a: n for n in self.nodes for a in n.all_input_nodes}  # as torch.fx does, drop values once read
        with evaluating(self.gm):
            for n in self.nodes:
                if n in self.kinds and n in self.needed:
                    boxes[n] = self._cone_step(n, boxes)
                    for a in n.all_input_nodes:
                        if last[a] is n and a is not self.target:
                            boxes.pop(a, None)
        value, (y, x0) = boxes[self.target]
        return value[:, :, cell[0] - y, cell[1] - x0]

    def cone_share(self, x: torch.Tensor, cell: tuple[int, int]) -> float:
        """The share of the windowed ops' multiply-adds (convolutions, pools) that the cone of the
        unit at ``cell`` needs, for inputs like ``x``: where it is near 1 the cone saves nothing,
        and its slices, which no longer lie contiguously in memory, cost more than they save."""
        self._sized(x, cell)
        done = total = 0
        for n, kind in self.kinds.items():
            if isinstance(kind, WindowedOp) and n in self.needed:
                m = self.gm.get_submodule(n.target)
                shape = self.clean[n].shape
                per = shape[1] * kind.kernel[0] * kind.kernel[1] * (
                    m.in_channels // m.groups if isinstance(m, nn.Conv2d) else 1)
                (y0, y1), (x0, x1) = self.needed[n]
                done += per * (y1 - y0) * (x1 - x0)
                total += per * shape[2] * shape[3]
        return done / max(1, total)

    def _sized(self, x: torch.Tensor, cell) -> None:
        """The maps' sizes and needed boxes for inputs like ``x`` and the unit at ``cell``, from
        one input run whole (once per size, cell, device and type)."""
        key = (tuple(x.shape[1:]), tuple(int(c) for c in cell), x.device, x.dtype)
        if getattr(self, "_cone_for", None) != key:
            with torch.no_grad():
                self.prepare(x[:1].detach(), [key[1]], [0])
            self._cone_for = key

    def _cone_step(self, n: fx.Node, boxes: dict) -> tuple[torch.Tensor, tuple[int, int]]:
        """Node ``n`` over its needed box, and the box's origin."""
        (y0, y1), (x0, x1) = need = self.needed[n]
        kind = self.kinds[n]
        if isinstance(kind, WindowedOp):
            src = n.all_input_nodes[0]
            value, origin = boxes[src]
            size = self.clean[src].shape[2:]
            span = [(lo * s - p, (hi - 1) * s - p + kind.reach(a))
                    for a, ((lo, hi), s, p) in enumerate(zip(need, kind.stride, kind.padding))]
            inside = _cut(value, origin, ((max(0, span[0][0]), min(size[0], span[0][1])),
                                          (max(0, span[1][0]), min(size[1], span[1][1]))))
            # the map's own padding, where the windows reach past its borders: the op's own where it
            # is the same on both sides (no copy; whole maps), else explicit
            pad = (max(0, -span[1][0]), max(0, span[1][1] - size[1]), max(0, -span[0][0]), max(0, span[0][1] - size[0]))
            if pad[0] == pad[1] and pad[2] == pad[3]:
                return _apply_window(self.gm.get_submodule(n.target), inside, (pad[2], pad[0])), (y0, x0)
            return _apply_window(self.gm.get_submodule(n.target), F.pad(inside, pad, value=kind.fill)), (y0, x0)
        # pointwise, elementwise and channel concatenations: every input cut to the box (a value on
        # this node's grid that does not depend on the input too, as a mask; broadcast ones whole)
        grid = self.clean[n].shape[2:]
        env = {}
        for a in n.all_input_nodes:
            if a in boxes:
                env[a] = _cut(*boxes[a], need)
            elif _on_grid(self.clean.get(a), grid):
                env[a] = self.clean[a][:, :, y0:y1, x0:x1]
        return self._run(n, {**self.clean, **env}), (y0, x0)

    # -- internals ---------------------------------------------------------------------------

    def _run(self, n: fx.Node, env: dict):
        args = fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
        if n.op == "call_module":
            return self.gm.get_submodule(n.target)(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], n.target)(*args[1:], **kwargs)
        if n.op == "get_attr":
            obj = self.gm
            for part in n.target.split("."):
                obj = getattr(obj, part)
            return obj
        raise RFLensError(f"incremental inference cannot run a node of kind {n.op!r}")

    def _needed(self, cells) -> dict:
        """Per node, the box ((y0, y1), (x0, x1)) (half-open) of positions the units need."""
        ys, xs = [c[0] for c in cells], [c[1] for c in cells]
        need = {self.target: ((min(ys), max(ys) + 1), (min(xs), max(xs) + 1))}
        for n in reversed(self.nodes):
            if n not in need or n not in self.kinds:
                continue
            kind, box = self.kinds[n], need[n]
            if isinstance(kind, WindowedOp):
                src = n.all_input_nodes[0]
                size = self.clean[src].shape[2:]
                box = tuple((max(0, lo * s - p), min(size[a], (hi - 1) * s - p + kind.reach(a)))
                            for a, ((lo, hi), s, p) in enumerate(zip(box, kind.stride, kind.padding)))
            for a in ([n.all_input_nodes[0]] if isinstance(kind, WindowedOp) else n.all_input_nodes):
                if a in self.kinds or a.op == "placeholder":
                    old = need.get(a)
                    need[a] = box if old is None else tuple(
                        (min(o[0], b[0]), max(o[1], b[1])) for o, b in zip(old, box))
        return need

    def _padded_clean(self, n: fx.Node, pad: tuple[tuple[int, int], tuple[int, int]], fill: float) -> torch.Tensor:
        key = (n, pad, fill)
        if key not in self._padded:
            (t, b), (lft, r) = pad
            self._padded[key] = F.pad(self.clean[n], (lft, r, t, b), value=fill)[0]
        return self._padded[key]

    def _materialise(self, n: fx.Node, region: _Region | None, origin: np.ndarray, size: tuple[int, int],
                     pad=((0, 0), (0, 0)), fill: float = 0.0) -> torch.Tensor:
        """Node ``n``'s value over boxes at ``origin`` (B, 2) of ``size`` (B, C, *size): the
        region's values where it has them, the clean value elsewhere, ``fill`` in the padding."""
        clean = self._padded_clean(n, pad, fill)
        (h, w), (ph, pw) = size, (pad[0][0], pad[1][0])
        out = clean.new_empty((len(origin), clean.shape[0], h, w))
        # plain slices, one per box: far cheaper than a batched gather of the same values
        for b, (y, x) in enumerate(origin.tolist()):
            out[b] = clean[:, y + ph:y + ph + h, x + pw:x + pw + w]
        if region is not None:
            rh, rw = region.size
            for b, ((y, x), (ry, rx)) in enumerate(zip(origin.tolist(), region.origin.tolist())):
                y0, y1 = max(y, ry), min(y + h, ry + rh)
                x0, x1 = max(x, rx), min(x + w, rx + rw)
                if y0 < y1 and x0 < x1:
                    out[b, :, y0 - y:y1 - y, x0 - x:x1 - x] = region.value[b, :, y0 - ry:y1 - ry, x0 - rx:x1 - rx]
        return out

    @staticmethod
    def _fit(lo: np.ndarray, hi: np.ndarray, box) -> tuple[np.ndarray, tuple[int, int]]:
        """Boxes of one shared size holding [lo, hi) (B, 2) cut to ``box``, moved inside it."""
        bl, bh = np.array([box[0][0], box[1][0]]), np.array([box[0][1], box[1][1]])
        lo, hi = np.maximum(lo, bl), np.minimum(hi, bh)
        size = tuple(max(1, int(e)) for e in (hi - lo).clip(min=0).max(0))
        return np.minimum(lo, bh - np.array(size)), size

    def _step(self, n: fx.Node, regions: dict) -> _Region | None:
        kind = self.kinds[n]
        ins = [a for a in n.all_input_nodes if a in regions]
        changed = [a for a in ins if regions[a] is not None]
        if not changed:
            return None
        need = self.needed[n]
        if isinstance(kind, WindowedOp):
            src = n.all_input_nodes[0]
            r = regions[src]
            size_in, size_out = self.clean[src].shape[2:], self.clean[n].shape[2:]
            reach = np.array([kind.reach(0), kind.reach(1)])
            s, p = np.array(kind.stride), np.array(kind.padding)
            lo = -((reach - 1 - r.origin - p) // s)  # first output whose window reaches the box
            hi = (r.origin + np.array(r.size) - 1 + p) // s + 1
            origin, size = self._fit(lo, hi, need)
            length = tuple(int((m - 1) * st + rc) for m, st, rc in zip(size, s, reach))
            # the padding the windows can reach: before the map, and past its end (ceil_mode)
            after = [max(0, int((size_out[a] - 1) * s[a] - p[a] + reach[a] - size_in[a])) for a in range(2)]
            pad = tuple((int(p[a]), after[a]) for a in range(2))
            window = self._materialise(src, r, origin * s - p, length, pad, kind.fill)
            return _Region(origin, size, _apply_window(self.gm.get_submodule(n.target), window))
        if kind == "pointwise" and len(changed) == 1 and len(ins) == 1:
            r = regions[changed[0]]
            return _Region(r.origin, r.size, self._run(n, {**self.clean, changed[0]: r.value}))
        # binary or cat (or pointwise with several varying inputs): the union of the boxes
        rs = [regions[a] for a in changed]
        lo = np.min([r.origin for r in rs], axis=0)
        hi = np.max([r.origin + np.array(r.size) for r in rs], axis=0)
        origin, size = self._fit(lo, hi, need)
        # every input on this node's grid is cut to the box, changed or not (a mask, a positional
        # embedding); broadcast ones (per-channel scales, scalars) are read whole
        grid = self.clean[n].shape[2:]
        env = {a: self._materialise(a, regions.get(a), origin, size) for a in n.all_input_nodes
               if a in regions or _on_grid(self.clean.get(a), grid)}
        return _Region(origin, size, self._run(n, {**self.clean, **env}))


def _cut(value: torch.Tensor, origin: tuple[int, int], box) -> torch.Tensor:
    """The part ``box`` of ``value``, a map's box at ``origin``: the tensor itself where that is
    all of it (a view would make every in-place op after it copy the base, for autograd)."""
    (y0, y1), (x0, x1) = box
    if (y0, x0) == tuple(origin) and (y1 - y0, x1 - x0) == tuple(value.shape[2:]):
        return value
    return value[:, :, y0 - origin[0]:y1 - origin[0], x0 - origin[1]:x1 - origin[1]]


def _on_grid(value, grid) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4 and value.shape[0] == 1 and value.shape[2:] == grid


def _unrolled(gm: fx.GraphModule, target: fx.Node) -> tuple[list[fx.Node], fx.Node]:
    """The graph's nodes with every call of an ``nn.Sequential`` (which the feature-extraction
    tracer keeps whole, e.g. torchvision's Conv2dNormActivation) replaced by calls of its
    children, so that each op is seen on its own; and the node now giving ``target``'s value."""
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in gm.graph.nodes:
        m = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(m, nn.Sequential) and len(n.args) == 1 and not n.kwargs:
            env[n] = _children(graph, gm, n.target, env[n.args[0]])
        else:
            env[n] = graph.node_copy(n, lambda a: env[a])
    return list(graph.nodes), env[target]


def _children(graph: fx.Graph, gm: fx.GraphModule, qual: str, value: fx.Node) -> fx.Node:
    for name, child in gm.get_submodule(qual).named_children():
        if isinstance(child, nn.Sequential):
            value = _children(graph, gm, f"{qual}.{name}", value)
        else:
            value = graph.call_module(f"{qual}.{name}", (value,))
    return value


def _describe(gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        return type(gm.get_submodule(n.target)).__name__
    return getattr(n.target, "__name__", str(n.target))


def _kind(gm: fx.GraphModule, n: fx.Node) -> str | WindowedOp:
    """How node ``n``, which depends on the input, is recomputed (or why it cannot be), from its
    row of the op table: pointwise and per-position ops on the changed box, elementwise ops on the
    union of their inputs' boxes, windowed modules by their geometry, channel concatenations."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        row = module_entry(type(m))
        if row is None or row.structure is Structure.WINDOWED:
            return _window(m)  # its geometry, or why it has none this engine knows
        what = f"{type(m).__name__}"
    elif n.op in ("call_function", "call_method"):
        what = function_name(n.target) if n.op == "call_function" else n.target
        row = BY_FUNCTION.get(what)
        if row is not None and row.structure is Structure.WINDOWED:
            return f"the functional {what}: incremental inference recomputes windowed modules (nn.Conv2d, ...)"
    else:
        row, what = None, n.op
    if row is None:
        return "not a pointwise, windowed, elementwise or channel-cat op"
    if row.structure in (Structure.POINTWISE, Structure.PER_POSITION):
        return "pointwise"
    if row.structure is Structure.ELEMENTWISE:
        return "binary"
    if row.rule == "cat" and n.op == "call_function":
        dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
        return "cat" if dim in (1, -3) else f"concatenation along dim {dim}"
    return f"{what} is {row.structure.label} ({row.structure.meaning})"
