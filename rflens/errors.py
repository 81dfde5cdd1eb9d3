"""Errors rflens raises for bad input or cases it cannot answer exactly.

Every error is an ``RFLensError``: the CLI prints its message and exits with status 2.
"""

from __future__ import annotations

import difflib
import os


class RFLensError(ValueError):
    """Base class: a clear, one-paragraph message, never a traceback for the user."""


class UnsupportedOpError(RFLensError):
    """An op whose effect on receptive fields rflens cannot compute exactly."""

    def __init__(self, op: str, module: str, why: str = ""):
        self.op, self.module, self.why = op, module, why
        where = f" in module '{module}'" if module else " in the model's forward"
        because = f" ({why})" if why else ""
        super().__init__(
            f"rflens cannot compute the receptive field through op '{op}'{where}{because}. "
            "Use method='probe' (CLI: --method probe) for the brute-force gradient answer."
        )


class LimitError(RFLensError):
    """A documented limit of the analytic engine: the model is valid, but holding its fields
    exactly would take more than the engine allows.  The message names the limit (``why``) and the
    way out, the brute-force answer ``method='probe'``.  Inside a trace it is re-raised as an
    ``UnsupportedOpError`` naming the op and the module where the limit was reached."""

    def __init__(self, why: str):
        self.why = why
        super().__init__(f"{why}. Use method='probe' (CLI: --method probe) for the brute-force gradient answer.")


class GeometryError(LimitError):
    """A receptive field that is a union of more separable pieces than ``geometry.MAX_TERMS``."""


class LayoutError(LimitError):
    """A tensor layout outside what the analytic engine follows exactly (units of misaligned
    grids, positions that are not separable across an op's dims, too many placed copies)."""


class TraceError(RFLensError):
    """The model could not be run on meta tensors."""


class InputTooSmallError(RFLensError):
    """A layer's output would be empty at this input size."""

    @classmethod
    def at(cls, op: str, module: str, why: str) -> InputTooSmallError:
        where = f"module '{module}'" if module else "the model's forward"
        return cls(f"the input is too small for this model: op '{op}' in {where} would produce an "
                   f"empty output ({why}). Use a larger --input-size.")


def raised_by_rflens(e: BaseException) -> bool:
    """True where the innermost frame is rflens' own code: a bug to report, not bad input."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    return last is not None and os.path.abspath(last).startswith(here)


def close_matches(name: str, choices: list[str], n: int = 5) -> str:
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:
        found = [c for c in choices if name.lower() in c.lower()][:n]
    return f" Did you mean: {', '.join(found)}?" if found else ""


class LayerNotFoundError(RFLensError, KeyError):
    """No layer of that name."""

    def __init__(self, name: str, choices: list[str]):
        outputs = [c for c in choices if c.startswith(name + "[")]
        if outputs:  # "output" of a model returning a tuple or dict: say which tensors there are
            super().__init__(f"'{name}' is not one tensor here but {len(outputs)}: {', '.join(outputs[:10])}. "
                             "Name one as the layer, or choose the model's output with output=... "
                             "(CLI: --model-output KEY_OR_INDEX).")
            return
        super().__init__(f"no layer named '{name}' in this model.{close_matches(name, choices)} "
                         f"({len(choices)} layers; list them with `rflens table`.)")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class UnitError(RFLensError, IndexError):
    """A unit index outside the layer's grid."""


class TooLargeError(RFLensError, MemoryError):
    """A request that would need more memory than the machine has available, refused before
    anything is allocated (``rflens.engine.memory.check``)."""


class ModelNotFoundError(RFLensError):
    """A model name that is neither a torchvision architecture nor module:callable."""


def first_line(error: BaseException, default: str = "") -> str:
    """The first line of an exception's message (at most 200 characters), for one-line reports."""
    text = str(error).strip().splitlines()
    return text[0][:200] if text else default
