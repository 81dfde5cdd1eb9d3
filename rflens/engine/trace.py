"""Tracing a model's dataflow on meta tensors.

The model runs once on ``meta`` tensors (no memory, no arithmetic) under a dispatch mode that
sees every aten op, applies the op's rule from ``ops.RULES`` and records layer outputs by name:

* every ``nn.Module`` call under its qualified name (``features.29``, ``layer4.2``, ``layer4``);
  a module called again gets ``_1``, ``_2`` as in ``torch.fx``;
* where ``torch.fx`` traces the model, every node as torchvision names it (``naming``).

In-place writes are followed through views with the real strides of the meta tensors, so a
``copy_`` into a slice (as circular padding does) lands on the right elements of the base.

An op whose reads depend on tensor values (``topk``, ``nonzero``, indexing by a mask, sampling at
computed positions: the op table's value-selected and unfollowed rows), or whose field passes a
limit of the engine (more than 64 separable pieces), does not end the trace: its outputs are
``Refused``, a marker every tensor computed from them carries instead of a layout
(no later rule runs on it), so everything that does not depend on the op keeps its exact field.
Where such an op's result has a shape that depends on values, the trace goes on as if the values
selected nothing (so the model's ``if boxes.numel() == 0`` takes its empty branch) and every
later op with an input dependency is refused too, since its shapes may come from that made-up
size.  Where the model reads a value (``.item()``, ``if x.any()``) or fails past a made-up size,
the trace stops there: what was recorded stays, and the model's output is refused.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import keystr, tree_flatten_with_path

from ..errors import (InputTooSmallError, LayerNotFoundError, LimitError, RFLensError, TraceError,
                      UnsupportedOpError, raised_by_rflens)
from . import ops
from .layout import Table, Tracked
from .metacopy import meta_copy
from .naming import Interp, fx_graph, module_hooks
from .ops import Op
from .ops.refusals import Refused, keeps_the_rest, selecting_nothing
from .strides import gather, scatter, spec


class Stopped(Exception):
    """The trace cannot go past this point (the model reads a value, or a made-up size broke it)."""

    def __init__(self, error: UnsupportedOpError):
        super().__init__(str(error))
        self.error = error


@dataclass
class Record:
    """A named value of the traced model (``tracked`` is ``Refused`` downstream of a refused op)."""

    name: str
    tracked: Tracked | Refused
    shape: tuple[int, ...] | None  # None: not known (it depends on values)
    op: str
    module: str


@dataclass
class _Entry:
    tensor: torch.Tensor
    tracked: Tracked | Refused
    root: torch.Tensor
    stamp: int


class Flow(TorchDispatchMode):
    """Dispatch mode that keeps a ``Tracked`` layout for every tensor derived from the input."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.table = Table()
        self.entries: dict[int, _Entry] = {}
        self.writes: dict[int, int] = {}
        self.module_stack: list[str] = []
        self.current_node: str | None = None
        # the refusal after which sizes may be made up: every later op with an input dependency
        # is refused with it
        self.made_up: UnsupportedOpError | None = None
        self.refusing = False  # whether some tensor is Refused yet (most traces never have one)

    # -- tensor bookkeeping ----------------------------------------------------------------
    def tracked(self, t: torch.Tensor) -> Tracked | Refused | None:
        """The layout of ``t``: which input units each element reads (None: no input dependency;
        ``Refused``: downstream of a refused op, which rules never see)."""
        e = self.entries.get(id(t))
        if e is None or e.tensor is not t:
            return None
        if self.writes.get(id(e.root), 0) != e.stamp:
            e = self._refresh(e)
        return e.tracked

    def put(self, t: torch.Tensor, tracked: Tracked | None, root: torch.Tensor | None = None) -> None:
        if tracked is None:
            self.entries.pop(id(t), None)
            return
        root = t if root is None else root
        self.refusing = self.refusing or isinstance(tracked, Refused)
        self.entries[id(t)] = _Entry(t, tracked, root, self.writes.get(id(root), 0))

    def root(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor whose storage ``t`` views (itself where it is no view)."""
        e = self.entries.get(id(t))
        if e is not None and e.tensor is t:
            return e.root
        return t._base if t._base is not None else t

    def _refresh(self, e: _Entry) -> _Entry:
        root_entry = self.entries.get(id(e.root))
        if root_entry is None:
            tracked = None
        elif isinstance(root_entry.tracked, Refused):
            tracked = root_entry.tracked
        else:
            tracked = gather(root_entry.tracked, e.root, e.tensor, self.k)
        new = _Entry(e.tensor, tracked, e.root, self.writes.get(id(e.root), 0))
        if tracked is None:
            self.entries.pop(id(e.tensor), None)
        else:
            self.entries[id(e.tensor)] = new
        return new

    def write(self, target: torch.Tensor, tracked: Tracked | Refused | None) -> None:
        """An in-place op wrote ``tracked`` into ``target`` (maybe a view of a larger base)."""
        root = self.root(target)
        if root is target:
            self.writes[id(root)] = self.writes.get(id(root), 0) + 1
            self.put(target, tracked)
            return
        root_tr = self.tracked(root)
        if root_tr is None and tracked is None:
            return
        if isinstance(tracked, Refused):  # a refusal is per tensor: the whole base is refused
            self.writes[id(root)] = self.writes.get(id(root), 0) + 1
            self.put(root, tracked)
            self.put(target, tracked, root)
            return
        if root_tr is None:
            root_tr = ops.constant_like(tuple(root.shape), self.k)
        new_root = scatter(root_tr, root, target, tracked, self.k)
        self.writes[id(root)] = self.writes.get(id(root), 0) + 1
        self.put(root, new_root)
        self.put(target, tracked, root)

    def refusal(self, tensors: list[torch.Tensor]) -> UnsupportedOpError | None:
        """The refusal a tensor among ``tensors`` (or the base it views) carries, if any."""
        for t in tensors:
            for u in (t, self.root(t)):
                tr = self.tracked(u)
                if isinstance(tr, Refused):
                    return tr.error
        return None

    @property
    def module(self) -> str:
        """Qualified name of the module (or FX node's module) running now."""
        if self.current_node is not None:
            return self.current_node
        return self.module_stack[-1] if self.module_stack else ""

    # -- the dispatch hook ------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema = func._schema
        written = [a for a, arg in zip(args, schema.arguments) if isinstance(a, torch.Tensor)
                   and arg.alias_info is not None and arg.alias_info.is_write]
        written += [kwargs[arg.name] for arg in schema.arguments
                    if arg.name in kwargs and arg.alias_info is not None and arg.alias_info.is_write
                    and isinstance(kwargs[arg.name], torch.Tensor)]
        before = [spec(w) for w in written]
        devices = {t.device.type for t in _tensors(args, kwargs)}
        if "meta" in devices and len(devices) > 1:
            # a tensor the model made itself (torch.zeros(...) without a device): it holds no
            # input dependency, only its shape matters
            args, kwargs = _to_meta(args), {k: _to_meta(v) for k, v in kwargs.items()}
        tensors = _tensors(args, kwargs)
        traced = [t for t in tensors if self.tracked(t) is not None]
        followed = bool(traced) or any(self.tracked(self.root(w)) is not None for w in written)
        module = self.module
        name = func.name().split("::")[-1]
        refused = (self.refusal(tensors) or self.made_up) if followed and self.refusing else None
        try:
            # real tensors (shapes an ONNX graph computes) get real values, not meta shortcuts
            out = ops.fast_meta(func, args, kwargs) if "meta" in devices else None
            if out is None:
                out = func(*args, **kwargs)
        except (RuntimeError, NotImplementedError, ValueError) as e:
            if not followed:
                raise _failure(func, module, e) from None
            if not needs_values(str(e)):
                if self.made_up is not None:  # the failure may come from a size the trace made up
                    raise Stopped(self.made_up) from None
                raise _failure(func, module, e) from None
            refused = refused or _value_refusal(schema, name, module)
            out = selecting_nothing(func, args, kwargs)
            if out is None:
                raise Stopped(refused) from None
            self.made_up, self.refusing = self.made_up or refused, True
        if not followed:
            return out
        result = None
        if refused is None:
            rule = ops.lookup(func)
            if rule is None:
                raise UnsupportedOpError(name, module)
            op = Op(name, tuple(args), dict(kwargs), out, module, self, before)
            try:
                result = rule(op) if traced else None
            except UnsupportedOpError as e:
                if not keeps_the_rest(name):
                    raise
                refused = e  # the op reads what values choose: its outputs are refused, not the model
            except LimitError as e:  # exact up to here: what depends on this op is refused, naming it
                refused = UnsupportedOpError(name, module, e.why)
        outs = out if isinstance(out, (tuple, list)) else [out]
        if refused is not None:
            result = [Refused(refused, sized=self.made_up is None)] * len(outs)
        results = result if isinstance(result, (tuple, list)) else [result]
        if len(results) == 1 and len(outs) > 1:
            results = results + [None] * (len(outs) - 1)
        is_view = bool(schema.returns) and schema.returns[0].alias_info is not None and not written
        for o, r in zip(outs, results):
            if not isinstance(o, torch.Tensor):
                continue
            if written and any(o is w for w in written):
                if r is not None and self.tracked(o) is r:
                    continue
                self.write(o, r)
            elif is_view and tensors:
                self.put(o, r, self.root(tensors[0]))
            else:
                self.put(o, r)
        return out


def _tensors(args, kwargs) -> list[torch.Tensor]:
    out = []
    for a in (*args, *kwargs.values()):
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out += [b for b in a if isinstance(b, torch.Tensor)]
    return out


def _to_meta(a):
    if isinstance(a, torch.Tensor) and a.device.type != "meta":
        return a.to("meta")
    if isinstance(a, (list, tuple)):
        return type(a)(_to_meta(b) for b in a)
    return a


def too_small(message: str) -> bool:
    """Whether PyTorch's error message says an output would be empty."""
    low = message.lower()
    return any(s in low for s in ("too small", "can't be greater than actual input", "non-positive",
                                  "output size is too small", "should be greater than 0", "must be greater than",
                                  "invalid computed output size", "negative dimension"))


def _value_refusal(schema, name: str, module: str) -> UnsupportedOpError:
    """The refusal of an op whose meta kernel needs the values of its traced inputs."""
    if schema.returns and not str(schema.returns[0].type).startswith("Tensor"):
        why = "the model reads its value, as .item() and if x > 0 do; a meta trace has none, so it stops there"
    else:
        why = "its result's shape depends on tensor values"
    return UnsupportedOpError(name, module, why)


def needs_values(message: str) -> bool:
    """Whether PyTorch's error message says the op needs tensor values a meta tensor lacks."""
    low = message.lower()
    return "meta" in low or "item()" in low or "data-dependent" in low or "data dependent" in low


def _failure(func, module: str, e: Exception) -> Exception:
    name = func.name().split("::")[-1]
    msg = str(e).strip().split("\n")[0]
    where = f"module '{module}'" if module else "the model's forward"
    if too_small(msg):
        return InputTooSmallError.at(name, module, msg)
    if needs_values(msg):
        return TraceError(f"op '{name}' in {where} needs real tensor values ({msg}); rflens traces on "
                          "meta tensors, so models whose structure depends on data cannot be analysed "
                          "analytically. Use method='probe'.")
    return TraceError(f"the model failed while tracing op '{name}' in {where}: {msg.rstrip('.')}. rflens runs the model "
                      "on one (1, C, *spatial) tensor of the input size: check its rank and size (models of "
                      "vectors or sequences, such as Linear-only or LSTM models, have no spatial receptive field).")


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode, each module's training flag put back afterwards."""
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, t in was_training.items():
            m.training = t


def execute(model: nn.Module, x: torch.Tensor, emit, graph=None, flow: Flow | None = None):
    """Run ``model`` on ``x`` in eval mode, calling ``emit(name, value, op, module)`` for every
    named value: the input (``x``), module outputs, and FX nodes where ``graph`` is given."""
    with evaluating(model), module_hooks(model, emit, flow):
        emit("x" if graph is not None else "input", x, "input", "")
        if graph is not None:
            gm, names, modules = graph
            by_node: dict = {}
            for qual, node in modules:
                kind = type(model.get_submodule(qual)).__name__
                by_node.setdefault(node, []).append((qual, kind))
            interp = Interp(gm, names, by_node, emit, flow)
            out = _failing_model(x, flow, lambda: interp.run(x))
        else:
            out = _failing_model(x, flow, lambda: model(x))
        emit("output", out, "output", "")
        return out


def _failing_model(x: torch.Tensor, flow: Flow | None, run):
    """``run()``; on real tensors, an error raised by the model's own code is the model's
    failure, said in one line (the meta trace words its own failures in ``api.analyze``)."""
    try:
        return run()
    except (RFLensError, Reached):
        raise
    except Exception as e:
        if flow is not None or raised_by_rflens(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise TraceError(f"the model failed when run on a batch of shape {tuple(x.shape)}: "
                         f"{type(e).__name__}: {first}") from e


class Recorder:
    """Named ``Record``s of one analytic run (first value under each name wins), up to the one
    named ``until`` where one is: there the forward pass stops."""

    def __init__(self, flow: Flow, until: str | None = None):
        self.flow = flow
        self.records: dict[str, Record] = {}
        self.order: list[str] = []
        self.until = until

    def __call__(self, name: str, value, op: str, module: str) -> None:
        if self.until in self.records:
            return  # modules unwinding after the stop report again
        for n, t in named_tensors(name, value):
            if n in self.records:
                continue
            tr = self.flow.tracked(t)
            if tr is None:
                continue
            sized = not isinstance(tr, Refused) or tr.sized
            self.records[n] = Record(n, tr, tuple(t.shape) if sized else None, op, module)
            self.order.append(n)
            if n == self.until:
                raise Reached(t)

    def stop(self, error: UnsupportedOpError) -> None:
        """The trace stopped at a refused op: the model's output (whatever its shape) is refused."""
        if "output" not in self.records:
            self.records["output"] = Record("output", Refused(error, sized=False), None, "output", "")
            self.order.append("output")


def named_tensors(name: str, value) -> list[tuple[str, torch.Tensor]]:
    """The tensors of a named value: itself, its only tensor, or one name per tensor of several
    by its place: ``name[0]`` in a tuple or list, ``name['boxes']`` in a dict."""
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    flat, _ = tree_flatten_with_path(value)
    tensors = [(path, v) for path, v in flat if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return [(name, tensors[0][1])]
    return [(name + keystr(path), v) for path, v in tensors]


class Reached(Exception):
    """Raised by an ``emit`` to end the forward pass there (``execute`` lets it through)."""

    def __init__(self, value: torch.Tensor | None = None):
        self.value = value


def capture(model: nn.Module, x: torch.Tensor, name: str, graph=None) -> torch.Tensor:
    """The value named ``name`` (as ``analyze`` names it) when ``model`` runs on ``x``; the
    forward pass stops there, so nothing after the layer is computed."""
    seen: list[str] = []

    def emit(n, value, op, module):
        if seen and seen[-1] is Reached:
            return  # modules unwinding after the stop report again; ignore them
        for n2, t in named_tensors(n, value):
            if n2 == name:
                seen.append(Reached)
                raise Reached(t)
            seen.append(n2)
    try:
        execute(model, x, emit, graph)
    except Reached as r:
        return r.value
    raise LayerNotFoundError(name, seen)


def run(model: nn.Module, input_size: tuple[int, ...], use_fx: bool = True, kind: type[Flow] = Flow,
        until: str | None = None) -> tuple[Flow, Recorder]:
    """Trace ``model`` at ``input_size`` = (C, *spatial) under ``kind``, a ``Flow`` (one that also
    notes something of each op); returns the flow and the named records, up to the one named
    ``until`` if given (the trace stops there: a model may need a larger input past it)."""
    k = len(input_size) - 1
    flow = kind(k)
    rec = Recorder(flow, until)
    model = meta_copy(model)  # the user's module is never touched (another thread may be running it)
    graph = fx_graph(model) if use_fx and not scripted(model) else None
    # in the model's float type: a meta convolution, too, refuses an input of another type than its bias
    x = torch.empty((1, *input_size), device="meta",
                    dtype=next((p.dtype for p in model.parameters() if p.is_floating_point()), None))
    with torch.no_grad(), flow:
        flow.put(x, ops.input_layout(flow.table, x.shape, k))
        try:
            execute(model, x, rec, graph, flow)
        except Stopped as s:
            rec.stop(s.error)
        except Reached:
            pass  # at ``until``
        except Exception:
            if flow.made_up is None:
                raise
            rec.stop(flow.made_up)  # the model's own code failed on a size the trace made up
    return flow, rec


def scripted(model: nn.Module) -> bool:
    """Whether TorchScript runs (part of) the model: it takes no hooks and FX cannot trace it,
    but its ops still pass the dispatch mode, so the model's outputs are followed exactly."""
    return any(isinstance(m, torch.jit.ScriptModule) for m in model.modules())

