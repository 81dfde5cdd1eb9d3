"""The rule registry: ``Op`` (what a rule sees of one aten call), ``@rule`` and ``lookup``, and the
helpers every rule family uses to build output layouts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from ...errors import InputTooSmallError, UnsupportedOpError
from ..geometry import Node
from ..layout import LayoutError, Part, Table, Tracked, align, compact, pad_parts, unique_rows


class Context(Protocol):
    """What a rule may ask of the trace: the layout of a tensor, the tensor whose storage a view
    shares, the node table and the number of spatial axes (``trace.Flow`` is one)."""

    k: int
    table: Table

    def tracked(self, t: torch.Tensor) -> Tracked | None: ...

    def root(self, t: torch.Tensor) -> torch.Tensor: ...


@dataclass
class Op:
    """One aten call as a rule sees it: the op's name, its arguments, its (meta) outputs, the
    module it ran in, and a narrow ``Context`` for the layouts of tensors."""

    name: str
    args: tuple
    kwargs: dict
    out: object
    module: str
    ctx: Context
    before: list = None  # (size, stride, offset) of written tensors before an in-place op

    def t(self, x) -> Tracked | None:
        """The layout of argument ``x`` (None: not a tensor, or no input dependency)."""
        return self.ctx.tracked(x) if isinstance(x, torch.Tensor) else None

    def root(self, x: torch.Tensor) -> torch.Tensor:
        """The tensor whose storage ``x`` views."""
        return self.ctx.root(x)

    @property
    def table(self) -> Table:
        return self.ctx.table

    @property
    def k(self) -> int:
        """The number of spatial axes of the input."""
        return self.ctx.k

    def arg(self, i: int, name: str, default=None):
        if len(self.args) > i:
            return self.args[i]
        return self.kwargs.get(name, default)

    def via(self, kind: str) -> str:
        where = f" in {self.module}" if self.module else ""
        return f"{self.name}{where} ({kind})"

    def fail(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.name, self.module, why)

    def too_small(self, why: str) -> InputTooSmallError:
        return InputTooSmallError.at(self.name, self.module, why)


Rule = Callable[[Op], object]

IMPLEMENTATIONS: dict[str, Rule] = {}
"""Rules by name; ``engine.families.TABLE`` says which aten ops each one follows."""

RULES: dict[str, Rule] = {}
"""Aten overload packet -> its rule, built from the op table by ``build_rules``."""


def rule(fn_or_name: Rule | str):
    """Register a rule under its function's name (or the name given: ``@rule("slice")``).  A
    name has one rule: registering it again is an error, never a silent replacement.

    >>> @rule("passthrough")
    ... def follow(op): ...
    Traceback (most recent call last):
    ...
    RuntimeError: rule 'passthrough' is registered twice (rflens.engine.ops.elementwise.passthrough and ...follow)
    """
    def register(fn: Rule, name: str) -> Rule:
        if name in IMPLEMENTATIONS:
            old = IMPLEMENTATIONS[name]
            raise RuntimeError(f"rule '{name}' is registered twice ({old.__module__}.{old.__qualname__} and "
                               f"{fn.__module__}.{fn.__qualname__})")
        IMPLEMENTATIONS[name] = fn
        return fn
    if isinstance(fn_or_name, str):
        return lambda fn: register(fn, fn_or_name)
    return register(fn_or_name, fn_or_name.__name__)


def build_rules(table, implementations: dict[str, Rule]) -> dict[str, Rule]:
    """Aten packet -> rule, from the rows of an op table.  Every row names a registered rule, no
    packet is in two rows, and every registered rule is used by some row."""
    rules: dict[str, Rule] = {}
    owner: dict[str, str] = {}
    for row in table:
        if not row.aten:
            continue  # the op reaches aten as other ops
        if row.rule not in implementations:
            raise RuntimeError(f"the op table names the rule '{row.rule}' for {', '.join(row.aten) or row.functions}, "
                               "but no such rule is registered")
        for name in row.aten:
            if name in rules:
                raise RuntimeError(f"aten op '{name}' is in two rows of the op table (rules '{owner[name]}' and "
                                   f"'{row.rule}'): one op, one rule")
            rules[name], owner[name] = implementations[row.rule], row.rule
    unused = sorted(set(implementations) - {row.rule for row in table if row.aten})
    if unused:
        raise RuntimeError(f"rules no row of the op table uses: {', '.join(unused)}")
    return rules


def lookup(func) -> Rule | None:
    name = func.name().split("::")[-1]
    return RULES.get(name) or RULES.get(name.split(".")[0])


# -------------------------------------------------------------------------------------------
# helpers


def int_list(v, n: int) -> list[int]:
    if isinstance(v, int):
        return [v] * n
    v = list(v)
    return v * n if len(v) == 1 else v


def norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


_IDENT: dict = {}


def ident_pos(ndim: int, dim: int, n: int) -> np.ndarray:
    """Shared identity position arrays, so equal layouts compare by identity."""
    key = (ndim, dim, n)
    if key not in _IDENT:
        shape = [1] * ndim
        shape[dim] = n
        _IDENT[key] = np.arange(n, dtype=np.int64).reshape(shape)
    return _IDENT[key]


def zero_pos(ndim: int) -> np.ndarray:
    return np.zeros((1,) * ndim, np.int64)


def broadcast_to(tr: Tracked, shape) -> Tracked:
    shape = tuple(shape)
    return Tracked(shape, [Part.of([align(a, len(shape)) for a in p.arrays()]) for p in tr.parts])


def _all_one_grid(table: Table, comp: np.ndarray) -> bool:
    ids = np.unique(comp)
    return all(i < 0 or all(n == 1 for n in table.nodes[i].grid) for i in ids)


def coalesce(table: Table, shape, parts: list[Part]) -> Tracked:
    """Merge parts that read their nodes at the same units (or at the only unit of an
    all-1 grid) into union nodes, keeping the layout small."""
    ndim = len(shape)
    k = table_k(parts)
    groups: dict[bytes, Part] = {}
    consts: list[Part] = []
    for p in parts:
        if (p.comp < 0).all():
            continue
        if all(a.size == 1 and int(a.flat[0]) == 0 for a in p.pos) and _all_one_grid(table, p.comp):
            consts.append(p)
            continue
        key = _units_key(p, shape)
        if key in groups:
            try:
                groups[key] = _merge(table, groups[key], p, ndim)
                continue
            except LayoutError:
                key = key + bytes(len(groups))
        groups[key] = p
    out = list(groups.values())
    for c in consts:
        for i, q in enumerate(out):
            try:
                out[i] = _merge(table, q, c, ndim)
                break
            except LayoutError:
                continue
        else:
            out.append(c)
    if not out:
        out = [Part(np.full((1,) * ndim, -1, np.int64), tuple(zero_pos(ndim) for _ in range(k)))]
    if len(out) > MAX_PARTS:
        raise LayoutError(f"its output reads more than {MAX_PARTS} differently placed copies of its inputs "
                          "(as window attention over reshaped windows does)")
    return Tracked(tuple(shape), out)


MAX_PARTS = 64


def _units_key(p: Part, shape) -> bytes:
    """Equal for parts whose unit arrays are equal once broadcast to the tensor's shape."""
    ndim = len(shape)
    return b"|".join(str(c.shape).encode() + c.tobytes() for c in
                     (compact(np.ascontiguousarray(align(a, ndim))) for a in p.pos))


def table_k(parts: list[Part]) -> int:
    return len(parts[0].pos) if parts else 0


def _merge(table: Table, a: Part, b: Part, ndim: int) -> Part:
    """Union of part ``b`` into part ``a`` (``b`` reads at ``a``'s units, or is all-1)."""
    ca, cb = compact(align(a.comp, ndim)), compact(align(b.comp, ndim))
    shape = np.broadcast_shapes(ca.shape, cb.shape)
    pairs = np.stack([np.broadcast_to(ca, shape).reshape(-1), np.broadcast_to(cb, shape).reshape(-1)], 1)
    rows, inv = unique_rows(pairs)
    ids = np.array([table.union((int(x), int(y))) for x, y in rows], np.int64)
    pos = a.pos
    if (ca < 0).any():
        # where only b is read, its units apply
        only_b = np.broadcast_to(ca < 0, shape)
        pos = tuple(compact(np.where(only_b, np.broadcast_to(align(q, ndim), np.broadcast_shapes(shape, q.shape)),
                                     np.broadcast_to(align(p, ndim), np.broadcast_shapes(shape, p.shape))))
                    for p, q in zip(a.pos, b.pos))
    return Part(ids[inv].reshape(shape), pos)


def union_of(op: Op, trs: list[Tracked], shape) -> Tracked:
    ndim = len(shape)
    parts = [p for ps in pad_parts(trs, ndim, op.k) for p in ps]
    return coalesce(op.table, shape, parts)


def mix(op: Op, tr: Tracked, dims: list[int], shape) -> Tracked:
    """Position-preserving: each result reads all elements along non-positional ``dims``."""
    parts = []
    for p in tr.parts:
        comp = p.comp
        if all(comp.shape[d] == 1 for d in dims):
            new = comp
        else:
            keep = [d for d in range(comp.ndim) if d not in dims]
            moved = np.moveaxis(comp, dims, list(range(comp.ndim - len(dims), comp.ndim)))
            flat = moved.reshape(moved.shape[: len(keep)] + (-1,))
            lead = flat.reshape(-1, flat.shape[-1])
            rows, inv = unique_rows(np.sort(lead, axis=1))
            ids = np.array([op.table.union(tuple(int(v) for v in np.unique(r))) for r in rows], np.int64)
            new = ids[inv].reshape(flat.shape[:-1] + (1,) * len(dims))
            new = np.moveaxis(new, list(range(comp.ndim - len(dims), comp.ndim)), dims)
        pos = tuple(a[tuple(slice(0, 1) if d in dims else slice(None) for d in range(a.ndim))] for a in p.pos)
        parts.append(Part(new, pos))
    return Tracked(tuple(shape), parts)


def out_shape(op: Op, i: int = 0) -> tuple[int, ...]:
    out = op.out[i] if isinstance(op.out, (tuple, list)) else op.out
    return tuple(out.shape)



def constant(op: Op, shape) -> Tracked:
    """A value that depends on no input pixel, of ``shape``."""
    return constant_like(shape, op.k)


def constant_like(shape, k: int) -> Tracked:
    ndim = len(shape)
    return Tracked(tuple(shape), [Part(np.full((1,) * ndim, -1, np.int64), tuple(zero_pos(ndim) for _ in range(k)))])


def input_layout(table: Table, shape, k: int) -> Tracked:
    """The model input: every channel of pixel p reads unit p of the input node."""
    node = table.add(Node.input(tuple(shape[2:])))
    ndim = len(shape)
    comp = np.full((1,) * ndim, node, np.int64)
    return Tracked(tuple(shape), [Part(comp, tuple(ident_pos(ndim, 2 + a, shape[2 + a]) for a in range(k)))])
