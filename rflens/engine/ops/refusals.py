"""Ops the analytic engine refuses, with the reason: it never guesses.

A refusal of these rows (the op table's value-selected and unfollowed ones), like a limit reached
inside any rule, ends no analysis: the op's outputs are ``Refused``, and only what depends on them
is (see ``engine.trace``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import UnsupportedOpError
from ..families import BY_ATEN, Structure
from .registry import Op, rule


@rule
def data_dependent(op: Op):
    raise op.fail("which elements it reads depends on tensor values")


@rule
def patches(op: Op):
    raise op.fail("patch extraction (unfold/fold) is not followed by the analytic engine yet")


@rule
def unsupported_resampling(op: Op):
    raise op.fail("its sampling positions are not followed by rflens yet")


@dataclass(frozen=True)
class Refused:
    """In place of a layout: the tensor depends on the output of an op rflens refused, and
    ``error`` (naming that op and its module) is what a field query on it raises.  ``sized``:
    its shape is the model's (False: it comes from a size the trace made up)."""

    error: UnsupportedOpError
    sized: bool = True


def keeps_the_rest(name: str) -> bool:
    """Whether refusing aten op ``name`` leaves the fields that do not depend on it: it reads
    elements chosen by value, or positions rflens does not follow (an unknown op, by contrast,
    is an error for the whole model: its row in the op table is missing, a bug to report)."""
    row = BY_ATEN.get(name) or BY_ATEN.get(name.split(".")[0])
    return row is not None and row.structure in (Structure.VALUE_SELECTED, Structure.UNFOLLOWED)


def selecting_nothing(func, args, kwargs):
    """``func``'s meta result where its shape depends on values, as if they selected nothing (a
    mask of all False, ``nonzero`` of zeros); None where that means nothing.

    >>> x = torch.empty((5, 4), device="meta")
    >>> selecting_nothing(torch.ops.aten.index.Tensor, (x, [x[:, 0] > 0]), {}).shape
    torch.Size([0, 4])
    """
    name = func._opname
    if name in ("nonzero", "argwhere"):
        return torch.empty((0, args[0].ndim), dtype=torch.long, device="meta")
    if name == "masked_select":
        return torch.empty((0,), dtype=args[0].dtype, device="meta")

    def is_mask(i) -> bool:
        return isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8)
    if not any(is_mask(i) for a in args if isinstance(a, (list, tuple)) for i in a):
        return None
    # a mask indexes as its nonzero positions: none, one empty index per dim it spans
    nothing = torch.empty((0,), dtype=torch.long, device="meta")
    args = tuple([j for i in a for j in ([nothing] * i.ndim if is_mask(i) else [i])]
                 if isinstance(a, (list, tuple)) else a for a in args)
    try:
        return func(*args, **kwargs)
    except (RuntimeError, NotImplementedError, ValueError):
        return None
