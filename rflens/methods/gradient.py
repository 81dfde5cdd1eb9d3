"""Where a unit really looks: gradients with the model's own weights.

* ``gradient_field``: |d unit / d input| for one input (the classic "nonzero gradient" RF),
  compared with the exact theoretical support, every missing pixel put down to its cause;
* ``effective_field``: the mean of that map over many inputs, the effective receptive field of
  Luo, Li, Urtasun and Zemel (NIPS 2016), with the numbers ERF papers quote.

Both run the model only up to the probed layer, in eval mode, on CUDA when present, and only
on the smallest crop of the input that holds the unit's field and everything its dependency
cone reads (``rflens.methods.crop``: exact, proved by analysing the model at the crop's size;
the whole input where it cannot be, and the result says why).  The model is left as it was
(device, training flags, ``requires_grad``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import spread
from .crop import WHOLE, Crop, exact_crop
from .incremental import Incremental
from ..engine.analyze import analyze
from ..errors import RFLensError, TraceError
from ..engine.families import Gradient, function_name, functions
from ..engine.field import Layer, Unit, UnitLike
from ..engine.standins import PositiveSurrogate
from ..engine.quantized import is_quantized
from .progress import ProgressLike, reporting
from .running import (Checkpoint, Inputs, InputsLike, fingerprint, input_size_or_default, model_dtype, model_normalize,
                      normalization, pick_device, prepared)
from ..engine.trace import capture, fx_graph

# the op table's rows whose derivative can hide a dependency: activations that are exactly flat
# somewhere (dead units, the kink at 0), and ops that route the gradient to one element of many
ACTIVATIONS = functions(Gradient.ZERO_DERIVATIVE)
MAXIMA = functions(Gradient.MAX_ROUTING)

MODES = ("luo", "replknet")
# the largest share of the convolutions' work a unit's cone may need for it to be computed alone:
# above it, slices that no longer lie contiguously in memory cost more than the cone saves
# (ResNet-50 on 2 CPU cores: about even at 0.66, 10% slower at 0.85)
CONE_SHARE = 0.6


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
        name = function_name(func)
        if name not in self.names or not args or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        x = args[0]
        if name in ACTIVATIONS:
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


class _Target:
    """One unit (all channels, or one) of a named layer: the scalar whose gradient we take, on
    the crop of the input that holds everything it reads (or the whole input)."""

    def __init__(self, model: nn.Module, layer: str, unit: UnitLike, channel: int | None, input_size,
                 crop: bool = True, cone: bool = False):
        if is_quantized(model):
            raise RFLensError("the model is quantized, and quantized ops have no gradient: take the gradient RF "
                              "of its float twin, rflens.engine.quantized.float_twin(model) (same layers, "
                              "dequantized weights)")
        self.analysis = analyze(model, input_size, until=layer)  # the rest of the model is not run either
        self.layer: Layer = self.analysis[layer]
        # the neuron's own theoretical field: one channel's where one is probed
        self.unit: Unit = self.layer.unit(unit, channel=channel)
        self.channel = channel
        self.channel_dim = self.layer.channel_dim
        self.model = model
        self.graph = fx_graph(model)
        self.crop: Crop = (exact_crop(model, self.layer, self.unit, channel) if crop
                           else Crop(None, f"{WHOLE}, as asked (crop=False)"))
        self.index = self.crop.local(self.unit.index)  # the unit on the crop's grid
        # within the crop, only the unit's dependency cone, where every op is one incremental
        # inference recomputes on boxes (plain autograd only: the explainer's stand-ins would meet
        # the cone's explicit -inf padding of max pools), and where it saves enough work
        self.cone: Incremental | None = None
        self.plan = Incremental.plan(model, self.layer.name, self.graph) if (
            cone and self.layer.spatial_dims == [2, 3]) else None  # decided on the first batch

    @property
    def note(self) -> str:
        return self.crop.note + ("; of it, only the positions the unit depends on are computed (its dependency "
                                 "cone)" if self.cone is not None else "")

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """(B, elements) of the unit for a batch of (cropped) inputs, the forward stopping at the layer."""
        if self.cone is not None:
            y = self.cone.cone(x, self.index)  # (B, channels)
            return y if self.channel is None else y[:, self.channel:self.channel + 1]
        y = capture(self.model, x, self.layer.name, self.graph)
        if y.ndim != len(self.layer.output_shape) or y.shape[0] != x.shape[0]:
            raise RFLensError(f"layer '{self.layer.name}' does not keep the batch in its first dimension "
                              f"(output {tuple(y.shape)} for a batch of {x.shape[0]})")
        idx: list = [slice(None)] * y.ndim
        for d, j in zip(self.layer.spatial_dims, self.index):
            idx[d] = j
        if self.channel is not None:
            idx[self.channel_dim] = self.channel
        return y[tuple(idx)].reshape(x.shape[0], -1)

    def gradient(self, x: torch.Tensor, mode: str = "luo") -> torch.Tensor:
        """d(unit)/d(input) for every input of the batch at once: the inputs do not interact
        in eval mode, so the gradient of the batch's sum is each input's own gradient.  Taken
        on the crop, and zero around it: outside its field a unit's gradient is zero."""
        xc = self.crop.take(x).detach().requires_grad_(True)
        if isinstance(self.plan, Incremental):
            self.cone = self.plan if self.plan.cone_share(xc, self.index) <= CONE_SHARE else None
            self.plan = None
        try:
            with torch.enable_grad():
                v = self.values(xc)
                score = (torch.relu(v) if mode == "replknet" else v).sum()
                if not score.requires_grad:
                    return torch.zeros_like(x)
                (g,) = torch.autograd.grad(score, xc)
        except TraceError as e:
            if self.crop.box is None:
                raise
            # the model's own code refused the crop (a check on real data): the whole input then
            self.crop = Crop(None, f"{WHOLE}: the model failed on the crop, of shape {tuple(xc.shape)} ({e})")
            self.index, self.cone = tuple(self.unit.index), None
            return self.gradient(x, mode)
        return self.crop.place(g, x.shape)


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
    holds nonzero pixels outside the theoretical support.  ``kink_inputs``: how many inputs
    of the activations were exactly 0, below 0, and in all, in the forward pass that ran.
    ``crop``: the box of the input the forward and backward passes ran on (half-open per
    axis; None: the whole input), ``crop_note`` which and why.
    """

    layer: str
    unit: tuple[int, ...]
    channel: int | None
    gradient: np.ndarray
    rf: Unit
    missed: dict[str, np.ndarray]
    kink_inputs: tuple[int, int, int]
    input_kind: str
    crop: tuple[tuple[int, int], ...] | None = None
    crop_note: str = WHOLE

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
        """One sentence per cause that explains missing pixels, biggest first, and last, one on
        the part of the input the gradient was computed on."""
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
        return lines + [f"computed on {self.crop_note}"]

    def to_dict(self) -> dict:
        return {
            "layer": self.layer, "unit": list(self.unit), "channel": self.channel, "input": self.input_kind,
            "theoretical_support": int(self.rf.mask.sum()), "theoretical_box": [list(b) for b in self.rf.box],
            "nonzero": int(self.nonzero.sum()), "outside": int(self.outside.sum()),
            "missed": {k: int(v.sum()) for k, v in self.missed.items()},
            "explanation": self.explain(),
            **_crop_dict(self.crop, self.crop_note),
        }

    def plot(self):
        """Heat map of |gradient| (log) and a map of support, gradient and causes."""
        from ..plot import gradient_figure
        return gradient_figure(self)


def gradient_field(model: nn.Module, layer: str, unit: UnitLike = "center",
                   input: torch.Tensor | str | Path | None = None, channel: int | None = None,
                   input_size=None, device=None, normalize=None, *, crop: bool = True) -> GradientField:
    """The gradient RF of one unit: where d(unit)/d(input) is nonzero for this model's weights
    and this input, against the exact theoretical support.

    ``unit``: an index on the layer's grid, or ``"center"`` (the default; ``None`` too).
    ``input`` (singular: exactly one; ``effective_field`` takes many as ``inputs``): a
    (C, *spatial) or (1, C, *spatial) tensor, an image path (resized and normalised, ImageNet
    statistics unless ``normalize=(mean, std)``), or ``None`` for zeros of ``input_size`` (the
    classic answer; default 3x224x224).  ``channel``: one output channel, or ``None`` for the
    sum over channels.  The passes run on the crop of the input that holds everything the unit
    reads (``crop``, exact; ``crop_note`` says where it cannot be); ``crop=False``: the whole input.

    >>> import torch, rflens
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    >>> g = rflens.gradient_field(net, "2", (1, 1), torch.rand(1, 10, 10), device="cpu")
    >>> int(g.rf.mask.sum()), int(g.nonzero.sum()) <= 16, g.crop
    (16, True, ((2, 6), (2, 6)))
    """
    x, kind = _one_input(model, input, input_size, model_normalize(model, normalize))
    target = _Target(model, layer, unit, channel, tuple(x.shape), crop)
    dev = pick_device(device)
    xb = x.unsqueeze(0).to(dev, model_dtype(model))
    maps = []
    with prepared(model, dev):
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
                         missed, (act.at_zero, act.below_zero, act.seen), kind, target.crop.box, target.crop.note)


def _crop_dict(box, note: str) -> dict:
    return {"crop": None if box is None else [list(b) for b in box], "crop_note": note}


def _one_input(model, input, input_size, normalize) -> tuple[torch.Tensor, str]:
    if input is None or (isinstance(input, str) and input == "zeros"):
        size = input_size_or_default(input_size)
        return torch.zeros(size), "zeros"
    if isinstance(input, torch.Tensor):
        x = input.detach()
        # (1, C, *spatial) is a batch of one; without input_size, 3 dims are (C, H, W)
        batched = x.ndim == len(input_size_or_default(input_size)) + 1 if input_size is not None else x.ndim >= 4
        if batched and x.shape[0] == 1:
            x = x[0]
        want = input_size_or_default(input_size)
        if input_size is not None and tuple(x.shape) != want:
            raise RFLensError(f"the input has shape {tuple(x.shape)}, not the input size {want}")
        return x.cpu(), "tensor"
    if isinstance(input, (str, Path)):
        from .images import load_image, to_tensor
        size = input_size_or_default(input_size)
        mean, std = normalization(normalize)
        return to_tensor(load_image(input, size[1:]), size[0], mean, std), f"image {input}"
    raise RFLensError(f"input must be a tensor, an image path or None (zeros), not {type(input).__name__}")


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
      the RF centre pixel);
    * ``crop``: the box of the input the passes ran on (None: the whole input), ``crop_note``
      which and why.
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
    crop: tuple[tuple[int, int], ...] | None = None
    crop_note: str = WHOLE

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
            **_crop_dict(self.crop, self.crop_note),
        }

    def plot(self, scale: str = "both"):
        """Heat maps (``"linear"``, ``"log"`` or ``"both"``) with the theoretical RF box and the
        Gaussian's 1- and 2-sigma ellipses."""
        from ..plot import erf_figure
        return erf_figure(self, scale=scale)

    def _repr_png_(self) -> bytes | None:
        from ..plot import erf_png
        return erf_png(self)


def effective_field(model: nn.Module, layer: str, unit: UnitLike = "center", inputs: InputsLike = 64, *,
                    input_size=None, channel: int | None = None, mode: str = "luo", limit: int | None = None,
                    batch_size: int = 16, seed: int = 0, normalize=None, device=None,
                    progress: ProgressLike = None,
                    checkpoint: str | Path | None = None, crop: bool = True) -> EffectiveField:
    """The effective RF (Luo et al., 2016) of one unit: the mean gradient map over many inputs.

    ``unit``: an index on the layer's grid, or ``"center"`` (the default; ``None`` too).
    ``inputs``: an int N (N inputs of standard Gaussian noise, one seeded generator per input,
    so results do not depend on ``batch_size``), a folder of images (recursive; any file Pillow
    reads, resized and centre-cropped to ``input_size`` and normalised with ``normalize`` =
    (mean, std), ImageNet statistics by default; unreadable files are skipped and listed in
    ``skipped``), a tensor (N, C, *spatial), or an iterable of such batches or of
    ``(batch, label)`` pairs such as a DataLoader.  ``limit`` caps how many are used.

    ``batch_size`` inputs go through one forward and one backward pass, on the crop of the
    input that holds everything the unit reads (exact; ``crop_note`` on the result says where
    it cannot be; ``crop=False``: the whole input).  ``progress``: None (a bar in a notebook,
    nothing elsewhere), False, True (a tqdm bar) or ``progress(done, total)``, called after each
    batch (``rflens.methods.progress``).  With ``checkpoint`` (a ``.npz`` path) the running sum
    is saved atomically after every batch and a later call with the same settings resumes.

    >>> import torch, rflens
    >>> net = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(5)])
    >>> for c in net: _ = torch.nn.init.ones_(c.weight)
    >>> erf = rflens.effective_field(net, "4", inputs=2, input_size=(1, 33, 33), device="cpu")
    >>> [round(s, 6) for s in erf.sigma], erf.rf_center, erf.crop
    ([1.825742, 1.825742], (16, 16), ((11, 22), (11, 22)))
    """
    if mode not in MODES:
        raise RFLensError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if batch_size < 1:
        raise RFLensError("batch_size must be at least 1")
    source = Inputs(inputs, input_size, limit, seed, model_normalize(model, normalize))
    target = _Target(model, layer, unit, channel, source.size, crop, cone=crop)
    dev = pick_device(device)
    dtype = model_dtype(model)
    config = {"layer": target.layer.name, "unit": list(target.unit.index), "channel": channel, "mode": mode,
              "source": source.describe, "size": list(source.size), "seed": seed,
              "model": fingerprint(model) if checkpoint is not None else None}
    keep = Checkpoint(checkpoint, config, "ERF")
    total_heat = np.zeros(source.size[1:], np.float64)
    count, consumed, skipped = 0, 0, []
    saved = keep.load()
    if saved is not None:
        total_heat = saved[0]["total"].astype(np.float64)
        count, consumed = saved[1]["count"], saved[1]["consumed"]
        skipped = [tuple(s) for s in saved[1]["skipped"]]
    with prepared(model, dev), reporting(progress, f"effective RF of {target.layer.name}", "input") as report:
        for batch in source.batches(batch_size, start=consumed, skipped=skipped):
            if batch.inputs is not None:
                g = target.gradient(batch.inputs.to(dev, dtype), mode)
                per = (g.clamp_min(0) if mode == "replknet" else g.abs()).sum(dim=1, dtype=torch.float64)
                ok = torch.isfinite(per.flatten(1).sum(1))
                for i in torch.nonzero(~ok).flatten().tolist():
                    skipped.append((batch.labels[i], "gradient is NaN or infinite"))
                total_heat += per[ok].sum(0).cpu().numpy()
                count += int(ok.sum())
            consumed += batch.consumed
            keep.save({"total": total_heat}, {"count": count, "consumed": consumed, "skipped": skipped})
            if report is not None:
                report(consumed, source.total)
    if count == 0:
        raise RFLensError(f"no usable inputs in {source.describe} ({len(skipped)} skipped"
                          + (f", e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ")"))
    return EffectiveField(total_heat / count, count, target.layer.name, target.unit.index, channel,
                          mode, target.unit, source.describe, tuple(skipped), target.crop.box, target.note)


