"""The entry point: ``analyze(model, input_size)``."""

from __future__ import annotations

import contextlib
import gc
from typing import TYPE_CHECKING, Sequence

from torch import nn

from ..errors import InputTooSmallError, RFLensError, TraceError, raised_by_rflens
from .analysis import Analysis
from .memory import check
from .quantized import float_twin
from .trace import run, too_small

if TYPE_CHECKING:  # for the annotation only: the analytic engine does not depend on its oracle
    from .probe import ProbeAnalysis


def parse_input_size(input_size) -> tuple[int, ...]:
    """``(C, *spatial)`` from a tuple or a string like ``3x224x224``."""
    if isinstance(input_size, str):
        try:
            input_size = tuple(int(p) for p in input_size.lower().replace(",", "x").split("x"))
        except ValueError:
            raise RFLensError(f"input size {input_size!r} is not of the form CxHxW (e.g. 3x224x224)") from None
    size = tuple(int(s) for s in input_size)
    if not 2 <= len(size) <= 4:
        raise RFLensError(f"input size {size} must be (C, *spatial) with 1, 2 or 3 spatial dims")
    if any(s < 1 for s in size):
        raise RFLensError(f"input size {size} has a dimension below 1")
    return size


def analyze(model: nn.Module, input_size: Sequence[int] | str, method: str = "analytic",
            fx_names: bool = True, until: str | None = None) -> Analysis | ProbeAnalysis:
    """Exact receptive fields of every layer of ``model`` for inputs of ``input_size``.

    ``input_size`` is ``(C, *spatial)`` with 1, 2 or 3 spatial dims.  A copy of the model runs
    once on meta tensors (no memory, no arithmetic); ``model`` itself is not touched, so another
    thread may run it meanwhile.  ``method="probe"`` answers by
    brute-force gradients instead (slow; the ground truth the analytic engine is tested against).
    ``until``: a layer's name; the analytic trace stops there, and the analysis holds the layers
    up to it (for a caller that needs one layer: past it a model may also need a larger input).

    >>> import torchvision, rflens
    >>> a = rflens.analyze(torchvision.models.alexnet(), (3, 227, 227))
    >>> a["features.12"].rf_size, a["features.12"].stride
    ((195, 195), (32, 32))
    >>> a["features.12"].unit((0, 0)).box
    ((0, 129), (0, 129))
    """
    size = parse_input_size(input_size)
    if method == "probe":
        from .probe import ProbeAnalysis
        return ProbeAnalysis(model, size, fx_names=fx_names)
    if method != "analytic":
        raise RFLensError(f"method must be 'analytic' or 'probe', not {method!r}")
    if not isinstance(model, nn.Module):
        raise RFLensError(f"expected a torch.nn.Module, got {type(model).__name__}")
    # the geometry keeps a (units x input length) matrix per axis and node: the input's own are
    # identities, and ResNet-50 keeps about four times as much in all
    check(4 * sum(n * n for n in size[1:]), f"the geometry of a {'x'.join(map(str, size))} input", size, 2)
    try:
        # quantized ops run on no meta tensor: their float twin has the same names and geometry
        with _no_cycle_collection():
            flow, rec = run(float_twin(model), size, use_fx=fx_names, until=until)
    except RFLensError:
        raise
    except Exception as e:
        if _raised_by_rflens(e):
            raise
        if too_small(str(e)):
            raise InputTooSmallError(f"the input {(1, *size)} is too small for this model: "
                                     f"{str(e).splitlines()[0]}. Use a larger input size.") from e
        first = str(e).splitlines()[0] if str(e) else ""
        hint = ""
        if "positional argument" in first:  # the forward wants more inputs than x
            hint = (" Give the forward's other inputs with rflens.adapt(model, extra_inputs=[shape, ...]) "
                    "(CLI: --model-input SHAPE or NAME=SHAPE).")
        raise TraceError(
            f"the model failed when called on one input of shape {(1, *size)} (meta tensors): "
            f"{type(e).__name__}: {first}. rflens calls "
            f"model(x) with a single (N, C, *spatial) tensor.{hint}") from e
    return Analysis(flow, rec.records, rec.order, size, type(model).__name__)


_raised_by_rflens = raised_by_rflens


@contextlib.contextmanager
def _no_cycle_collection():
    """The trace makes many small objects that reference counting frees; Python's cycle collector,
    set off by their number, walked every object of the process (the model, torch's modules) in
    the middle of a trace and made some analyses 2-3x slower (measured: ShuffleNet 283 ms against
    99 ms). Collected after the trace instead, if it was on."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
