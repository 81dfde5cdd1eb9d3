"""Where a unit really looks: gradients with the model's own weights.

* ``gradient_field``: |d unit / d input| for one input (the classic "nonzero gradient" RF),
  compared with the exact theoretical support, every missing pixel put down to its cause;
* ``effective_field``: the mean of that map over many inputs, the effective receptive field of
  Luo, Li, Urtasun and Zemel (NIPS 2016), with the numbers ERF papers quote.

Both run the model only up to the probed layer, in eval mode, on CUDA when present; the
model is left as it was (device, training flags, ``requires_grad``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import spread
from .api import analyze
from .errors import RFLensError, UnitError
from .field import Layer, Unit
from .files import atomic_write
from .probe import PositiveSurrogate, _name
from .trace import capture, fx_graph

# activations whose derivative is exactly zero somewhere (dead units, the kink at 0)
ACTIVATIONS = frozenset("""relu relu6 hardtanh hardsigmoid hardswish clamp clamp_min clamp_max clip
threshold""".split())
# ops that route the gradient to one element of many
MAXIMA = frozenset("""max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices
max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices
max min amax amin maximum minimum fmax fmin""".split())

MODES = ("luo", "replknet")


class StraightThrough(TorchFunctionMode):
    """Keeps every value of the forward pass, but lets the gradient of the named ops flow as
    through their structural twins (activations: identity; max: sum over the same window), so
    a missing gradient can be put down to the ops that stopped it.  Counts how many inputs of
    the activations sat exactly at 0 and how many below."""

    def __init__(self, names: frozenset[str]):
        super().__init__()
        self.names = names
        self.at_zero = 0
        self.below_zero = 0
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        base = _name(func).rstrip("_")
        if base not in self.names or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        x = args[0]
        if base in ACTIVATIONS:
            with torch.no_grad():
                self.at_zero += int((x == 0).sum())
                self.below_zero += int((x < 0).sum())
                self.seen += x.numel()
            twin = x * 1.0  # taken before an in-place op overwrites x
            return _blend(func(*args, **kwargs), twin)
        twin = PositiveSurrogate().__torch_function__(func, types, args, kwargs)
        return _blend(func(*args, **kwargs), twin)


def _blend(real, twin):
    """``real``'s values with ``twin``'s gradient (tuples: values first, indices as they are)."""
    if isinstance(real, torch.Tensor):
        return real.detach() + (twin - twin.detach())
    return type(real)((_blend(real[0], twin[0]), *real[1:]))


@contextlib.contextmanager
def _prepared(model: nn.Module, device: torch.device):
    """The model on ``device`` without parameter gradients; put back as it was afterwards."""
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    if any(d.type == "meta" for d in devices):
        raise RFLensError("the model's weights are on the meta device (no values): gradients need real "
                          "weights; build it on the CPU or load a checkpoint (CLI: --weights PATH)")
    grads = {p: p.requires_grad for p in model.parameters()}
    home = devices.pop() if len(devices) == 1 else None
    try:
        for p in grads:
            p.requires_grad_(False)
        if home is None or home != device:
            model.to(device)
        yield
    finally:
        for p, r in grads.items():
            p.requires_grad_(r)
        if home is not None and home != device:
            model.to(home)


def _device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _dtype(model: nn.Module) -> torch.dtype:
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


class _Target:
    """One unit (all channels, or one) of a named layer: the scalar whose gradient we take."""

    def __init__(self, model: nn.Module, layer: str, unit, channel: int | None, input_size):
        self.analysis = analyze(model, input_size)
        self.layer: Layer = self.analysis[layer]
        self.unit: Unit = self.layer.unit(None if unit in (None, "center", "centre") else unit)
        self.channel = channel
        rest = [d for d in range(1, len(self.layer.output_shape)) if d not in self.layer.spatial_dims]
        self.channel_dim = rest[0] if rest else None
        if channel is not None:
            if self.channel_dim is None:
                raise RFLensError(f"layer '{layer}' has no channel dimension to pick channel {channel} from")
            n = self.layer.output_shape[self.channel_dim]
            if not 0 <= channel < n:
                raise UnitError(f"channel {channel} is outside layer '{layer}', which has {n} channels (0..{n - 1})")
        self.model = model
        self.graph = fx_graph(model)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, elements) of the unit for a batch of inputs, the forward stopping at the layer."""
        y = capture(self.model, x, self.layer.name, self.graph)
        if y.ndim != len(self.layer.output_shape) or y.shape[0] != x.shape[0]:
            raise RFLensError(f"layer '{self.layer.name}' does not keep the batch in its first dimension "
                              f"(output {tuple(y.shape)} for a batch of {x.shape[0]})")
        idx: list = [slice(None)] * y.ndim
        for d, j in zip(self.layer.spatial_dims, self.unit.index):
            idx[d] = j
        if self.channel is not None:
            idx[self.channel_dim] = self.channel
        return y[tuple(idx)].reshape(x.shape[0], -1)

    def gradient(self, x: torch.Tensor, mode: str = "luo") -> torch.Tensor:
        """d(unit)/d(input) for every input of the batch at once: the inputs do not interact
        in eval mode, so the gradient of the batch's sum is each input's own gradient."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            v = self.values(x)
            score = (torch.relu(v) if mode == "replknet" else v).sum()
            if not score.requires_grad:
                return torch.zeros_like(x)
            (g,) = torch.autograd.grad(score, x)
        return g


# -- the gradient RF of one input ---------------------------------------------------------------

CAUSES = {
    "activations": "activations with a zero derivative (ReLU-family inputs at or below 0)",
    "max": "max-pooling / max routing the gradient to one element of each window",
    "other": "exact zeros or cancellation in weights and values (zero weights, products with "
             "zeros, sums that cancel)",
}


@dataclass(frozen=True)
class GradientField:
    """|d unit / d input| for one input, and how it compares with the theoretical RF.

    ``heat`` sums |gradient| over input channels; ``nonzero`` is where it is not 0.
    ``missed`` maps each cause in ``CAUSES`` to the pixels of the theoretical support that
    the gradient misses because of it; ``outside`` (always empty unless rflens has a bug)
    holds nonzero pixels outside the theoretical support.
    """

    layer: str
    unit: tuple[int, ...]
    channel: int | None
    gradient: np.ndarray
    rf: Unit
    missed: dict[str, np.ndarray]
    kink_inputs: tuple[int, int, int]
    input_kind: str

    @property
    def heat(self) -> np.ndarray:
        return np.abs(self.gradient).sum(axis=0)

    @property
    def nonzero(self) -> np.ndarray:
        return self.heat > 0

    @property
    def outside(self) -> np.ndarray:
        return self.nonzero & ~self.rf.mask

    def explain(self) -> list[str]:
        """One sentence per cause that explains missing pixels, biggest first."""
        lines = []
        support = int(self.rf.mask.sum())
        at_zero, below, seen = self.kink_inputs
        for cause, mask in sorted(self.missed.items(), key=lambda kv: -int(kv[1].sum())):
            n = int(mask.sum())
            if not n:
                continue
            line = f"{n} of {support} pixels ({100 * n / support:.1f}%): {CAUSES[cause]}"
            if cause == "activations" and seen:
                line += (f"; {at_zero} of {seen} activation inputs were exactly 0 (where PyTorch's "
                         f"derivative is 0) and {below} below 0")
            lines.append(line)
        if self.outside.any():
            lines.append(f"{int(self.outside.sum())} pixels have a gradient outside the theoretical RF: "
                         "a bug in rflens, please report it")
        return lines

    def to_dict(self) -> dict:
        return {
            "layer": self.layer, "unit": list(self.unit), "channel": self.channel, "input": self.input_kind,
            "theoretical_support": int(self.rf.mask.sum()), "theoretical_box": [list(b) for b in self.rf.box],
            "nonzero": int(self.nonzero.sum()), "outside": int(self.outside.sum()),
            "missed": {k: int(v.sum()) for k, v in self.missed.items()},
            "explanation": self.explain(),
        }

    def plot(self):
        """Heat map of |gradient| (log) and a map of support, gradient and causes."""
        from .plot import gradient_figure
        return gradient_figure(self)


def gradient_field(model: nn.Module, layer: str, unit=None, input=None, channel: int | None = None,
                   input_size=None, device=None, normalize=None) -> GradientField:
    """The gradient RF of one unit: where d(unit)/d(input) is nonzero for this model's weights
    and this input, against the exact theoretical support.

    ``input``: a (C, *spatial) or (1, C, *spatial) tensor, an image path (resized and
    normalised, ImageNet statistics unless ``normalize=(mean, std)``), or ``None`` for zeros
    of ``input_size`` (the classic answer; default 3x224x224).  ``channel``: one output
    channel, or ``None`` for the sum over channels.

    >>> import torch, rflens
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    >>> g = rflens.gradient_field(net, "2", (1, 1), torch.rand(1, 10, 10), device="cpu")
    >>> int(g.rf.mask.sum()), int(g.nonzero.sum()) <= 16
    (16, True)
    """
    x, kind = _one_input(model, input, input_size, normalize)
    target = _Target(model, layer, unit, channel, tuple(x.shape))
    dev = _device(device)
    xb = x.unsqueeze(0).to(dev, _dtype(model))
    maps = []
    with _prepared(model, dev):
        maps.append(target.gradient(xb)[0])
        act = StraightThrough(ACTIVATIONS)
        with act:
            maps.append(target.gradient(xb)[0])
        with StraightThrough(ACTIVATIONS | MAXIMA):
            maps.append(target.gradient(xb)[0])
    nz = [m.abs().sum(0).cpu().numpy() > 0 for m in maps]
    reached = nz[0] | nz[1]
    missed = {"activations": nz[1] & ~nz[0], "max": nz[2] & ~reached,
              "other": target.unit.mask & ~(reached | nz[2])}
    return GradientField(target.layer.name, target.unit.index, channel, maps[0].cpu().numpy(), target.unit,
                         missed, (act.at_zero, act.below_zero, act.seen), kind)


def _one_input(model, input, input_size, normalize) -> tuple[torch.Tensor, str]:
    if input is None or (isinstance(input, str) and input == "zeros"):
        size = _size(input_size)
        return torch.zeros(size), "zeros"
    if isinstance(input, torch.Tensor):
        x = input.detach()
        # (1, C, *spatial) is a batch of one; without input_size, 3 dims are (C, H, W)
        batched = x.ndim == len(_size(input_size)) + 1 if input_size is not None else x.ndim >= 4
        if batched and x.shape[0] == 1:
            x = x[0]
        if input_size is not None and tuple(x.shape) != _size(input_size):
            raise RFLensError(f"the input has shape {tuple(x.shape)}, not the input size {_size(input_size)}")
        return x.cpu(), "tensor"
    if isinstance(input, (str, Path)):
        from .images import load_image, to_tensor
        size = _size(input_size)
        mean, std = _normalize(normalize)
        return to_tensor(load_image(input, size[1:]), size[0], mean, std), f"image {input}"
    raise RFLensError(f"input must be a tensor, an image path or None (zeros), not {type(input).__name__}")


def _size(input_size) -> tuple[int, ...]:
    from .api import parse_input_size
    return parse_input_size(input_size) if input_size is not None else (3, 224, 224)


def _normalize(normalize):
    from .images import IMAGENET_MEAN, IMAGENET_STD
    if normalize is None:
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise RFLensError("normalize must be a pair (mean, std)") from None
    return mean, std


# -- the effective RF: the mean over many inputs ----------------------------------------------

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
MASS_FRACTIONS = (0.5, 0.9, 0.95)


@dataclass(frozen=True)
class EffectiveField:
    """The effective RF of one unit: ``heat`` is the mean over ``count`` inputs of the gradient
    map (mode ``"luo"``: sum over input channels of |d unit / d input|, unit = sum over its
    channels or the chosen one; mode ``"replknet"``: RepLKNet's definition, the ReLU'd unit
    summed over channels and the positive part of the gradient).

    Numbers (pixel coordinates, pixel ``i`` at ``i``):

    * ``center_of_mass``, ``sigma``, ``covariance``: the moment-matched Gaussian;
    * ``rf_center``: the exact centre of the probed unit's theoretical RF (on an even input the
      middle unit's RF is not centred on the image: compare with this, not the image centre);
    * ``mass_radii``: radius around the centre of mass holding 50/90/95% of the mass;
    * ``trf_ratio``: per axis, the Gaussian's 4-sigma extent over the theoretical RF's extent on
      the input (Luo et al.: falls like 1/sqrt(depth));
    * ``area_ratio``: RepLKNet's high-contribution area ratio (log scale, their exact rule;
      ``None`` = threshold not reached) and ``linear_area_ratio`` (linear mass, squares centred on
      the RF centre pixel).
    """

    heat: np.ndarray
    count: int
    layer: str
    unit: tuple[int, ...]
    channel: int | None
    mode: str
    rf: Unit
    source: str
    skipped: tuple[tuple[str, str], ...] = field(default=())

    @cached_property
    def _moments(self) -> spread.Moments:
        return spread.moments(self.heat)

    @property
    def center_of_mass(self) -> tuple[float, ...]:
        return self._moments.center

    @property
    def sigma(self) -> tuple[float, ...]:
        return self._moments.sigma

    @property
    def covariance(self) -> np.ndarray:
        return self._moments.covariance

    @property
    def rf_center(self) -> tuple[float, ...]:
        return tuple(self.rf.center)

    @property
    def offset(self) -> tuple[float, ...]:
        """Centre of mass minus the RF centre, per axis."""
        return tuple(m - c for m, c in zip(self.center_of_mass, self.rf_center))

    @cached_property
    def mass_radii(self) -> dict[float, float]:
        return {f: spread.mass_radius(self.heat, f, self.center_of_mass) for f in MASS_FRACTIONS}

    @property
    def trf_ratio(self) -> tuple[float, ...]:
        return tuple(4 * s / max(1, b - a) for s, (a, b) in zip(self.sigma, self.rf.box))

    @cached_property
    def area_ratio(self) -> dict[float, tuple[int, float] | None]:
        if self.heat.ndim != 2 or not self.heat.max() > 0:
            return {t: None for t in THRESHOLDS}
        return {t: spread.replknet_area_ratio(self.heat, t) for t in THRESHOLDS}

    @cached_property
    def linear_area_ratio(self) -> dict[float, tuple[int, float]]:
        if not self.heat.max() > 0:
            return {}
        center = [min(n - 1, max(0, int(np.floor(c + 0.5)))) for c, n in zip(self.rf_center, self.heat.shape)]
        return {t: spread.centred_square(self.heat, t, center) for t in THRESHOLDS}

    def to_dict(self) -> dict:
        def num(v):
            return None if v is None or not np.isfinite(v) else round(float(v), 4)
        return {
            "layer": self.layer, "unit": list(self.unit), "channel": self.channel, "mode": self.mode,
            "inputs": self.count, "source": self.source, "skipped": len(self.skipped),
            "input_size": list(self.heat.shape),
            "rf_center": [num(c) for c in self.rf_center],
            "rf_box": [list(b) for b in self.rf.box],
            "center_of_mass": [num(c) for c in self.center_of_mass],
            "offset": [num(c) for c in self.offset],
            "sigma": [num(s) for s in self.sigma],
            "mass_radii": {f"{int(f * 100)}%": num(r) for f, r in self.mass_radii.items()},
            "trf_ratio": [num(r) for r in self.trf_ratio],
            "area_ratio": {f"{int(t * 100)}%": (None if r is None else {"side": r[0], "ratio": num(r[1])})
                           for t, r in self.area_ratio.items()},
            "linear_area_ratio": {f"{int(t * 100)}%": {"side": r[0], "ratio": num(r[1])}
                                  for t, r in self.linear_area_ratio.items()},
        }

    def plot(self, scale: str = "both"):
        """Heat maps (``"linear"``, ``"log"`` or ``"both"``) with the theoretical RF box and the
        Gaussian's 1- and 2-sigma ellipses."""
        from .plot import erf_figure
        return erf_figure(self, scale=scale)

    def _repr_png_(self) -> bytes | None:
        from .plot import to_png
        return to_png(self.plot()) if self.heat.ndim == 2 else None


def effective_field(model: nn.Module, layer: str, unit="center", inputs=64, *, input_size=None,
                    channel: int | None = None, mode: str = "luo", limit: int | None = None,
                    batch_size: int = 16, seed: int = 0, normalize=None, device=None,
                    progress: Callable[[int, int | None], None] | None = None,
                    checkpoint: str | Path | None = None) -> EffectiveField:
    """The effective RF (Luo et al., 2016) of one unit: the mean gradient map over many inputs.

    ``inputs``: an int N (N inputs of standard Gaussian noise, one seeded generator per input,
    so results do not depend on ``batch_size``), a folder of images (recursive; any file Pillow
    reads, resized and centre-cropped to ``input_size`` and normalised with ``normalize`` =
    (mean, std), ImageNet statistics by default; unreadable files are skipped and listed in
    ``skipped``), a tensor (N, C, *spatial), or an iterable of such batches or of
    ``(batch, label)`` pairs such as a DataLoader.  ``limit`` caps how many are used.

    ``batch_size`` inputs go through one forward and one backward pass.  ``progress(done,
    total)`` is called after each batch.  With ``checkpoint`` (a ``.npz`` path) the running sum
    is saved atomically after every batch and a later call with the same settings resumes.

    >>> import torch, rflens
    >>> net = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(5)])
    >>> for c in net: _ = torch.nn.init.ones_(c.weight)
    >>> erf = rflens.effective_field(net, "4", inputs=2, input_size=(1, 33, 33), device="cpu")
    >>> [round(s, 6) for s in erf.sigma], erf.rf_center
    ([1.825742, 1.825742], (16, 16))
    """
    if mode not in MODES:
        raise RFLensError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if batch_size < 1:
        raise RFLensError("batch_size must be at least 1")
    source = _Source(inputs, input_size, limit, seed, normalize)
    target = _Target(model, layer, unit, channel, source.size)
    dev = _device(device)
    dtype = _dtype(model)
    config = {"layer": target.layer.name, "unit": list(target.unit.index), "channel": channel, "mode": mode,
              "source": source.describe, "size": list(source.size), "seed": seed, "model": _fingerprint(model)}
    state = _State.open(checkpoint, config, source.size)
    total = source.total
    with _prepared(model, dev):
        for batch in source.batches(batch_size, start=state.consumed, skipped=state.skipped):
            if batch.inputs is not None:
                g = target.gradient(batch.inputs.to(dev, dtype), mode)
                per = (g.clamp_min(0) if mode == "replknet" else g.abs()).sum(dim=1, dtype=torch.float64)
                ok = torch.isfinite(per.flatten(1).sum(1))
                for i in torch.nonzero(~ok).flatten().tolist():
                    state.skipped.append((batch.labels[i], "gradient is NaN or infinite"))
                state.add(per[ok].sum(0).cpu().numpy(), int(ok.sum()))
            state.consumed += batch.consumed
            state.save()
            if progress is not None:
                progress(state.consumed, total)
    if state.count == 0:
        raise RFLensError(f"no usable inputs in {source.describe} ({len(state.skipped)} skipped"
                          + (f", e.g. {state.skipped[0][0]}: {state.skipped[0][1]})" if state.skipped else ")"))
    return EffectiveField(state.total / state.count, state.count, target.layer.name, target.unit.index, channel,
                          mode, target.unit, source.describe, tuple(state.skipped))


def _fingerprint(model: nn.Module) -> str:
    """Names, shapes and sums of the weights: enough to refuse resuming with another model."""
    h = hashlib.sha256()
    with torch.no_grad():
        for n, t in list(model.state_dict().items()):
            h.update(f"{n}{tuple(t.shape)}".encode())
            if t.device.type != "meta" and t.is_floating_point() and t.numel():
                h.update(f"{float(t.double().sum()):.10g}".encode())
    return h.hexdigest()[:16]


@dataclass
class _Batch:
    inputs: torch.Tensor | None
    labels: list[str]
    consumed: int


class _Source:
    """Inputs in a fixed order, so a run can resume after the ones it has used."""

    def __init__(self, inputs, input_size, limit, seed, normalize):
        self.seed, self.limit = seed, limit
        self.mean, self.std = _normalize(normalize)
        self.files: list[Path] | None = None
        self.tensor: torch.Tensor | None = None
        self.iterable: Iterable | None = None
        if isinstance(inputs, bool):
            raise RFLensError("inputs must be a count, a folder, a tensor or an iterable of batches")
        if isinstance(inputs, int):
            if inputs < 1:
                raise RFLensError(f"the number of noise inputs must be at least 1, not {inputs}")
            self.size = _size(input_size)
            self.count = inputs
            self.describe = f"{inputs} Gaussian noise inputs (seed {seed})"
        elif isinstance(inputs, (str, Path)):
            from .images import image_files
            self.size = _size(input_size)
            self.files = image_files(inputs)
            self.count = len(self.files)
            self.describe = f"images in {inputs}"
        elif isinstance(inputs, torch.Tensor):
            if inputs.ndim < 3:
                raise RFLensError(f"an input tensor must be (N, C, *spatial), not {tuple(inputs.shape)}")
            self.tensor = inputs.detach()
            self.size = tuple(inputs.shape[1:])
            self.count = inputs.shape[0]
            self.describe = f"a tensor of {inputs.shape[0]} inputs"
        elif isinstance(inputs, Iterable):
            self.iterable = inputs
            first = next(iter(inputs), None)
            t = first[0] if isinstance(first, (tuple, list)) else first
            if not isinstance(t, torch.Tensor) or t.ndim < 3:
                raise RFLensError("an iterable of inputs must yield (N, C, *spatial) tensors or (tensor, label) pairs")
            self.size = tuple(t.shape[1:])
            self.count = len(inputs.dataset) if hasattr(inputs, "dataset") else (
                len(inputs) if hasattr(inputs, "__len__") and not hasattr(inputs, "batch_size") else None)
            self.describe = f"{type(inputs).__name__} of inputs"
        else:
            raise RFLensError(f"inputs must be a count, a folder, a tensor or an iterable, not {type(inputs).__name__}")
        if limit is not None and self.count is not None:
            self.count = min(self.count, limit)

    @property
    def total(self) -> int | None:
        return self.count

    def _samples(self, start: int) -> Iterator[tuple[torch.Tensor | None, str]]:
        if self.files is not None:
            from .images import load_image, to_tensor
            for path in self.files[start:self.count]:
                try:
                    yield to_tensor(load_image(path, self.size[1:]), self.size[0], self.mean, self.std), str(path)
                except RFLensError as e:
                    yield None, f"{path}\t{e}"
        elif self.tensor is not None:
            for i in range(start, self.count):
                yield self.tensor[i], f"input {i}"
        elif self.iterable is not None:
            i = 0
            for item in self.iterable:
                batch = item[0] if isinstance(item, (tuple, list)) else item
                for t in batch:
                    if self.limit is not None and i >= self.limit:
                        return
                    if i >= start:
                        if tuple(t.shape) != self.size:
                            yield None, f"input {i}\tshape {tuple(t.shape)} differs from {self.size}"
                        else:
                            yield t, f"input {i}"
                    i += 1
        else:
            for i in range(start, self.count):
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
                yield torch.randn(self.size, generator=gen), f"noise {i}"

    def batches(self, batch_size: int, start: int, skipped: list) -> Iterator[_Batch]:
        pending: list[tuple[torch.Tensor, str]] = []
        consumed = 0
        for t, label in self._samples(start):
            consumed += 1
            if t is None:
                skipped.append(tuple(label.split("\t", 1)))
            else:
                pending.append((t, label))
            if len(pending) == batch_size:
                yield _Batch(torch.stack([p[0] for p in pending]), [p[1] for p in pending], consumed)
                pending, consumed = [], 0
        if pending or consumed:
            yield _Batch(torch.stack([p[0] for p in pending]) if pending else None,
                         [p[1] for p in pending], consumed)


@dataclass
class _State:
    """The running sum of gradient maps, optionally kept in a checkpoint file."""

    path: Path | None
    config: dict
    total: np.ndarray
    count: int = 0
    consumed: int = 0
    skipped: list = field(default_factory=list)

    @classmethod
    def open(cls, path, config: dict, size: tuple[int, ...]) -> "_State":
        blank = cls(Path(path) if path else None, config, np.zeros(size[1:], np.float64))
        if path is None or not Path(path).exists():
            return blank
        try:
            with np.load(path, allow_pickle=False) as f:
                saved = json.loads(str(f["config"]))
                state = cls(Path(path), config, f["total"].astype(np.float64), int(f["count"]),
                            int(f["consumed"]), [tuple(s) for s in json.loads(str(f["skipped"]))])
        except (OSError, ValueError, KeyError) as e:
            raise RFLensError(f"cannot resume from '{path}': not an rflens ERF checkpoint ({e})") from None
        if saved != config:
            diff = ", ".join(k for k in config if saved.get(k) != config[k])
            raise RFLensError(f"checkpoint '{path}' was made with other settings ({diff}); "
                              "delete it or choose another path")
        return state

    def add(self, heat: np.ndarray, n: int) -> None:
        self.total += heat
        self.count += n

    def save(self) -> None:
        if self.path is None:
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, total=self.total, count=self.count, consumed=self.consumed,
                         config=json.dumps(self.config), skipped=json.dumps(self.skipped))
        atomic_write(self.path, write)
