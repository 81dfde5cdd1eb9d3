"""The empirical receptive field of Zhou, Khosla, Lapedriza, Oliva and Torralba (ICLR 2015).

For each of a channel's top images, slide a small occluder over the image, record how much the
channel's activation at its peak (the unit there) changes, and spread each change over the
pixels the occluder covered (the mean over the occluders covering a pixel, as Captum's
``Occlusion`` does): that is the discrepancy map.  Centre every map on the exact theoretical-RF
centre of the unit that peaked, on a canvas twice the image size, and average them: the
empirical RF.

Exact, and far less work than the naive procedure (one full forward per occluded image per
channel):

* the forward pass stops at the probed layer;
* one occluded forward serves every channel whose top images include that image;
* an occluder that misses a unit's exact theoretical support cannot change it: skipped;
* each occluded copy recomputes only what the occluder changed, within what the units need:
  the clean image's activations are cached and, node by node, only the occluder's projective
  field, cut to the units' receptive fields, is recomputed (Krypton-style incremental
  inference, ``rflens.incremental``);
* where a layer has an op the incremental engine does not know (squeeze-excite, global
  pooling, ...), each forward runs on the part of the image the image's probed units can see
  (``crop.covering``: their unclipped RF boxes, from a multiple of the strides before the
  layer so the crop sees the same grids).  The crop is checked once per image against the
  full image's activations; where they differ (a model whose padding depends on the input
  size, say) the whole image is used.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import spread
from .crop import covering
from ..deprecation import renamed
from ..errors import RFLensError
from ..engine.field import Layer, Unit
from .incremental import Incremental
from .distributed import ExecutorLike, as_executor, run_jobs
from .progress import ProgressLike, reporting
from .running import Checkpoint, Inputs, InputsLike, fingerprint, model_dtype, model_normalize, pick_device
from .scan import Scan, TopImage, channel_layer, top_images
from ..engine.naming import fx_graph
from ..engine.trace import capture, execute, named_tensors

FILLS = ("random", "zeros", "mean", "blur")
DISCREPANCIES = ("abs", "drop")
METHODS = ("fast", "crop", "full", "naive")
MASS = 0.9  # the empirical RF is the smallest centred square holding this much of the map


@dataclass(frozen=True)
class Occluder:
    """An occluder of ``size`` x ``size`` pixels slid with ``stride`` (top-left corners at 0,
    stride, ... while it fits).  ``fill``: ``"random"`` (uniform random pixels in each
    channel's value range on that image, seeded per image), ``"zeros"``, ``"mean"`` (the
    image's mean colour) or ``"blur"`` (the image blurred, sigma = size / 2)."""

    size: int = 11
    stride: int = 3
    fill: str = "random"
    seed: int = 0

    def __post_init__(self):
        if self.fill not in FILLS:
            raise RFLensError(f"fill must be one of {', '.join(FILLS)}, not {self.fill!r}")
        if self.size < 1 or self.stride < 1:
            raise RFLensError(f"occluder size and stride must be at least 1 (got {self.size}, {self.stride})")

    def grid(self, shape: tuple[int, int]) -> tuple[range, range]:
        """Top-left corners along each axis."""
        h, w = shape
        if self.size > min(h, w):
            raise RFLensError(f"an occluder of {self.size} pixels does not fit the {h}x{w} input")
        return range(0, h - self.size + 1, self.stride), range(0, w - self.size + 1, self.stride)

    def patches(self, x: torch.Tensor, image: int) -> torch.Tensor:
        """The fill of every position, (positions, C, size, size), for input ``x`` (C, H, W)
        that sits at position ``image`` of its source (so random fills are reproducible)."""
        ys, xs = self.grid(tuple(x.shape[1:]))
        n, s, c = len(ys) * len(xs), self.size, x.shape[0]
        if self.fill == "zeros":
            return torch.zeros((n, c, s, s), dtype=x.dtype, device=x.device)
        if self.fill == "mean":
            return x.mean(dim=(1, 2))[None, :, None, None].expand(n, c, s, s)
        if self.fill == "blur":
            from torchvision.transforms.functional import gaussian_blur
            blurred = gaussian_blur(x[None], [2 * s + 1, 2 * s + 1], [s / 2, s / 2])[0]
            return torch.stack([blurred[:, y:y + s, x0:x0 + s] for y in ys for x0 in xs])
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + image)
        u = torch.rand((n, c, s, s), generator=gen, dtype=torch.float64).to(x.device, x.dtype)
        lo, hi = x.amin(dim=(1, 2)), x.amax(dim=(1, 2))
        return lo[None, :, None, None] + (hi - lo)[None, :, None, None] * u


@dataclass(frozen=True)
class Discrepancy:
    """One channel on one of its top images, at the unit where it peaked: ``activation``
    (clean), ``drops`` (activation minus occluded activation, per occluder position, 0 where
    the occluder misses the unit's RF) and ``heat`` (the pixel map: per pixel, the mean over
    the occluders covering it of |drop| or the signed drop)."""

    image: TopImage
    activation: float
    drops: np.ndarray
    heat: np.ndarray
    rf: Unit


@dataclass(frozen=True)
class EmpiricalField:
    """The empirical RF of one channel: its discrepancy maps centred on the exact RF centre of
    the peak unit, on a (2H, 2W) canvas whose centre pixel (H, W) is that RF centre, averaged."""

    layer: str
    channel: int
    maps: tuple[Discrepancy, ...]
    heat: np.ndarray
    theoretical: tuple[int, ...]
    mass: float = MASS

    @cached_property
    def size(self) -> int:
        """Side of the smallest centred odd square holding ``mass`` of the averaged map (0 for
        a unit no occluder changed)."""
        if not self.heat.max() > 0:
            return 0
        center = tuple(n // 2 for n in self.heat.shape)
        return spread.centred_square(np.abs(self.heat), self.mass, center)[0]

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "images": len(self.maps),
                "empirical_size": self.size, "theoretical_size": list(self.theoretical), "mass": self.mass,
                "top": [{"image": m.image.name, "score": round(m.image.score, 5), "where": list(m.image.where),
                         "rf_center": list(m.rf.center)} for m in self.maps]}


@dataclass(frozen=True)
class EmpiricalLayer:
    """Empirical RFs of several channels of one layer: Zhou et al.'s Table 1 row."""

    layer: str
    fields: dict[int, EmpiricalField]
    theoretical: tuple[int, ...]
    occluder: Occluder
    discrepancy: str
    scan: Scan = field(repr=False)
    cropped: int = 0  # images answered on a crop of the image rather than the whole of it
    fallback: str = ""  # with method "fast": why incremental inference was not used ("" when it was)

    @property
    def sizes(self) -> np.ndarray:
        return np.array([f.size for f in self.fields.values() if f.heat.max() > 0], float)

    def to_dict(self) -> dict:
        s = self.sizes
        return {"layer": self.layer, "units": len(self.fields), "theoretical_size": list(self.theoretical),
                "empirical_mean": round(float(s.mean()), 2) if s.size else None,
                "empirical_std": round(float(s.std()), 2) if s.size else None,
                "occluder": {"size": self.occluder.size, "stride": self.occluder.stride,
                             "fill": self.occluder.fill, "seed": self.occluder.seed},
                "discrepancy": self.discrepancy, "mass": MASS, "cropped_images": self.cropped,
                "incremental_fallback": self.fallback or None,
                "fields": [f.to_dict() for f in self.fields.values()]}

    def plot(self, channel: int | None = None):
        """The averaged map of one channel (default: the first) with the theoretical RF outlined."""
        from ..plot import empirical_layer_plot
        return empirical_layer_plot(self, channel)


@renamed(units=("channels", "they are channels"), images="inputs")
def empirical_field(model: nn.Module, layer: str, channels: int | Sequence[int] | None = None,
                    inputs: InputsLike | Scan | None = None, *, scan: Scan | None = None, k: int = 10,
                    occluder: Occluder | None = None, discrepancy: str = "abs", input_size=None, normalize=None,
                    batch_size: int = 64, device=None, method: str = "fast",
                    progress: ProgressLike = None,
                    checkpoint: str | Path | None = None, executor: ExecutorLike = None) -> EmpiricalLayer:
    """Empirical RFs (Zhou et al., 2015) of ``channels`` (an int, a list or a range; default
    all) of ``layer``.

    ``inputs``: where the top images come from (a folder, tensor or dataset as for
    ``top_images``); ``scan``: a scan already made of those inputs (else one is made, keeping
    ``k`` per channel).  A scan of a folder remembers the files, so ``inputs`` may be left out.

    ``discrepancy="abs"`` (default) maps |activation change|: the RF is where the unit is
    sensitive either way, and signed changes would cancel in the average over images;
    ``"drop"`` keeps the sign (activation minus occluded activation), as Captum's Occlusion.

    ``method``: ``"fast"`` (default, exact: incremental re-inference, or crops where the layer
    has ops the incremental engine does not know; ``fallback`` on the result says why), or the
    reference procedures it is tested and benchmarked against: ``"crop"`` (the fallback alone),
    ``"full"`` (every occluder, the whole image, batched, stopping at the layer) and ``"naive"``
    (one full forward of the model per occluded image per unit).

    ``progress``: None (a bar in a notebook, nothing elsewhere), False, True (a tqdm bar) or
    ``progress(done, total)``, called after each image scanned (where the scan is made here),
    then after each top image occluded (``rflens.methods.progress``).  With ``checkpoint`` (a ``.npz``
    path) every image's results are saved as they come (atomically), and a later call with the
    same settings skips the images already done.

    ``executor="ray"`` (or a ``RayExecutor``) spreads the images over Ray actors holding the
    model (and makes the scan there too, when it is made here); the answers are merged in the
    images' order, so the result equals this process's, and a checkpoint resumes the same way.

    >>> import torch, rflens
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    >>> res = rflens.empirical_field(net, "2", [0], torch.rand(4, 1, 24, 24), k=2,
    ...                              occluder=rflens.Occluder(3, 1), device="cpu")
    >>> res.fields[0].theoretical, res.fields[0].size <= 6 + 2 * 2 + 1  # RF, occluder overhang, rounding
    ((6, 6), True)
    """
    if discrepancy not in DISCREPANCIES:
        raise RFLensError(f"discrepancy must be one of {', '.join(DISCREPANCIES)}, not {discrepancy!r}")
    if method not in METHODS:
        raise RFLensError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    occluder = occluder or Occluder()
    executor = as_executor(executor)
    scan, source = scanned_inputs(model, layer, inputs, scan, k, input_size, normalize, device, progress, executor)
    target = channel_layer(model, layer, source.size)
    if target.name != scan.layer:
        raise RFLensError(f"the scan is of layer '{scan.layer}', not '{target.name}'")
    if len(source.size) != 3:
        raise RFLensError("occlusion maps need images: inputs of shape (C, H, W)")
    channels = list(range(scan.channels)) if channels is None else [int(c) for c in _as_list(channels)]
    for c in channels:
        scan.top(c)  # checks the range
    # which channels each image serves: one occluded forward per image for all of them
    jobs: dict[int, list[tuple[int, TopImage]]] = {}
    for c in channels:
        for t in scan.top(c)[:k]:
            jobs.setdefault(t.index, []).append((c, t))
    dev = pick_device(device)
    engine = _Engine(model, target, occluder, batch_size, dev, model_dtype(model))
    # "units" (channels) as checkpoints already on disk spell it, so they still resume
    config = {"layer": target.name, "units": channels, "k": k, "method": method,
              "occluder": [occluder.size, occluder.stride, occluder.fill, occluder.seed],
              "scan": _scan_id(scan), "model": fingerprint(model) if checkpoint is not None else None}
    keep = Checkpoint(checkpoint, config, "empirical RF")
    saved = keep.load()
    results: dict[str, np.ndarray] = dict(saved[0]) if saved else {}
    todo = [(index, wanted) for index, wanted in sorted(jobs.items()) if f"drops{index}" not in results]
    done, cropped = len(jobs) - len(todo), 0
    with reporting(progress, f"occluding top images of {target.name}", "image") as report:
        for finished in range(1, done + 1 if report is not None else 0):  # the images a checkpoint answers
            report(finished, len(jobs))
        answers = run_jobs(executor, model, device, _occluder_worker,
                           (target, occluder, batch_size, source, method), todo)
        with contextlib.closing(answers):
            for index, clean, drops, crops in answers:
                results[f"drops{index}"], results[f"clean{index}"] = drops, clean
                keep.save(results, {})
                done, cropped = done + 1, cropped + crops
                if report is not None:
                    report(done, len(jobs))
    found: dict[tuple[int, int], Discrepancy] = {}
    shape = tuple(source.size[1:])
    for index, wanted in sorted(jobs.items()):
        maps = engine.discrepancies(shape, wanted, results[f"clean{index}"], results[f"drops{index}"], discrepancy)
        for (c, t), d in zip(wanted, maps):
            found[(c, t.index)] = d
    h, w = source.size[1:]
    fields = {}
    for c in channels:
        maps = tuple(found[(c, t.index)] for t in scan.top(c)[:k])
        canvas = np.mean([_centred(m.heat, m.rf.center) for m in maps], axis=0) if maps else np.zeros((2 * h, 2 * w))
        fields[c] = EmpiricalField(target.name, c, maps, canvas, tuple(target.for_channel(c).rf_size))
    return EmpiricalLayer(target.name, fields, tuple(target.rf_size), occluder, discrepancy, scan, cropped,
                          engine.fallback if method == "fast" else "")


def scanned_inputs(model, layer: str, inputs, scan: Scan | None, k: int, input_size, normalize,
                   device, progress: ProgressLike = False, executor: ExecutorLike = None) -> tuple[Scan, _Lookup]:
    """The scan (made here from ``inputs`` when not given, or ``inputs`` itself when it is one)
    and the scanned inputs by position (a folder's scan remembers its files)."""
    normalize = model_normalize(model, normalize)
    if scan is None and isinstance(inputs, Scan):
        scan, inputs = inputs, None
    if scan is None:
        if inputs is None:
            raise RFLensError("give the inputs (a folder, tensor or dataset) or a scan of them")
        scan = top_images(model, layer, inputs, k, input_size=input_size, normalize=normalize, device=device,
                          progress=progress, executor=executor)
    if inputs is None:
        if not scan.names or scan.names[0].startswith("input "):
            raise RFLensError("this scan was made from a tensor or dataset, which it does not keep: pass "
                              "the same inputs again as inputs=")
        inputs = [Path(n) for n in scan.names]
    return scan, _Lookup(inputs, scan, input_size, normalize)


def _scan_id(scan: Scan) -> str:
    import hashlib
    h = hashlib.sha256(scan.images.tobytes() + scan.where.tobytes() + scan.scores.tobytes())
    return h.hexdigest()[:16]


def _as_list(channels) -> list:
    if isinstance(channels, int):
        return [channels]
    if isinstance(channels, range) or isinstance(channels, (list, tuple)):
        return list(channels)
    raise RFLensError(f"channels must be a channel number, a list or a range of them, not "
                      f"{type(channels).__name__}")


def _centred(heat: np.ndarray, center) -> np.ndarray:
    """``heat`` on a canvas twice its size with the pixel nearest ``center`` at the canvas
    centre (ties go to the lower pixel)."""
    h, w = heat.shape
    canvas = np.zeros((2 * h, 2 * w))
    cy, cx = (math.ceil(c - 0.5) for c in center)
    oy, ox = h - cy, w - cx
    ys, xs = slice(max(0, oy), min(2 * h, oy + h)), slice(max(0, ox), min(2 * w, ox + w))
    canvas[ys, xs] = heat[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox]
    return canvas


class _Lookup:
    """Inputs by their position in the scanned source."""

    def __init__(self, inputs, scan: Scan, input_size, normalize):
        size = tuple(scan.config.get("size", ())) or None
        if isinstance(inputs, list):
            self.paths, self.source = inputs, None
            from .running import input_size_or_default, normalization
            self.size = input_size_or_default(input_size or size)
            self.mean, self.std = normalization(normalize)
        else:
            self.paths = None
            self.source = Inputs(inputs, input_size or size, None, 0, normalize)
            self.size = self.source.size

    def get(self, index: int) -> torch.Tensor:
        if self.paths is not None:
            from .images import load_image, to_tensor
            return to_tensor(load_image(self.paths[index], self.size[1:]), self.size[0], self.mean, self.std)
        for _, t, label in self.source.samples(index, index + 1):
            if t is None:
                raise RFLensError(f"cannot load input {index}: {label}")
            return t
        raise RFLensError(f"the inputs have no position {index}; were they the ones scanned?")


def _occluder_worker(model: nn.Module, device: torch.device, layer: Layer, occluder: Occluder, batch_size: int,
                     source: _Lookup, method: str):
    """The worker of an empirical RF (``distributed.run_jobs``): for a job ``(image, units)``,
    the units' clean activations and drops, and whether the image was answered on a crop."""
    engine = _Engine(model, layer, occluder, batch_size, device, model_dtype(model))

    def work(job: tuple[int, list[tuple[int, TopImage]]]) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
        index, wanted = job
        before = engine.crops
        clean, drops = engine.run(source.get(index), index, wanted, method)
        yield index, clean, drops, engine.crops - before
    return work


def _hits(mask: np.ndarray, occluder: Occluder, ys: range, xs: range) -> np.ndarray:
    """Which occluder positions overlap ``mask`` (bool, (len(ys), len(xs)))."""
    s = occluder.size
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    y0, x0 = np.asarray(ys)[:, None], np.asarray(xs)[None, :]
    total = integral[y0 + s, x0 + s] - integral[y0, x0 + s] - integral[y0 + s, x0] + integral[y0, x0]
    return total > 0


class _Engine:
    """Occluded forwards for one image and the units it serves."""

    def __init__(self, model, layer: Layer, occluder: Occluder, batch_size: int, device, dtype):
        self.model, self.layer, self.occluder = model, layer, occluder
        self.batch_size, self.device, self.dtype = batch_size, device, dtype
        self.graph = fx_graph(model)
        self.crops = 0  # images answered on a crop (the rest used the whole image)
        plan = Incremental.plan(model, layer.name, self.graph)
        self.incremental, self.fallback = (None, plan) if isinstance(plan, str) else (plan, "")

    def _values(self, x: torch.Tensor, cells: list[tuple[int, ...]], channels: list[int]) -> torch.Tensor:
        """(B, units) activations of the units at ``cells``/``channels``, forward stopping at the layer."""
        a = capture(self.model, x, self.layer.name, self.graph)
        if a.ndim != 4:
            raise RFLensError(f"layer '{self.layer.name}' does not give a (N, C, H, W) map on the crop")
        ys = torch.tensor([c[0] for c in cells], device=a.device)
        xs = torch.tensor([c[1] for c in cells], device=a.device)
        return a[:, torch.tensor(channels, device=a.device), ys, xs]

    def _full_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output from a forward of the whole model (the naive procedure)."""
        got = []

        def emit(name, value, op, module):
            for n, t in named_tensors(name, value):
                if n == self.layer.name and not got:
                    got.append(t)
        execute(self.model, x, emit, self.graph)
        return got[0]

    def run(self, x: torch.Tensor, index: int, wanted: list[tuple[int, TopImage]],
            method: str) -> tuple[np.ndarray, np.ndarray]:
        """Clean activations (units,) and drops (units, positions) of the units ``wanted`` on
        input ``x``, position ``index`` of its source."""
        x = x.to(self.device, self.dtype)
        occ = self.occluder
        ys, xs = occ.grid(tuple(x.shape[1:]))
        corners = [(y, x0) for y in ys for x0 in xs]
        patches = occ.patches(x, index)
        rfs = [self.layer.unit(t.where, channel=c) for c, t in wanted]  # each neuron's own field
        channels = [c for c, _ in wanted]
        cells = [t.where for _, t in wanted]
        hits = np.stack([_hits(rf.mask, occ, ys, xs).ravel() for rf in rfs])  # (units, positions)
        if method == "naive":
            return self._naive(x, corners, patches, cells, channels)
        use = np.arange(len(corners)) if method == "full" else np.flatnonzero(hits.any(0))
        if method == "fast" and self.incremental is not None:
            clean, drops = self._incremental(x, corners, patches, use, cells, channels)
        else:
            region, local, clean = self._region(x, rfs, cells, channels, crop=method != "full")
            drops = self._occluded(x, corners, patches, use, region, local, channels, clean)
        # an occluder that misses a unit's RF cannot change it: 0, not the float noise of a batch
        return clean, drops if method == "full" else np.where(hits, drops, 0.0)

    def discrepancies(self, shape, wanted, clean, drops, discrepancy: str) -> list[Discrepancy]:
        """Per-position drops of the units ``wanted`` on one image as discrepancy maps."""
        ys, xs = self.occluder.grid(shape)
        out = []
        for u, (c, t) in enumerate(wanted):
            d = drops[u].reshape(len(ys), len(xs))
            heat = _spread(np.abs(d) if discrepancy == "abs" else d, self.occluder, shape)
            out.append(Discrepancy(t, float(clean[u]), d, heat, self.layer.unit(t.where, channel=c)))
        return out

    def _region(self, x, rfs: list[Unit], cells, channels, crop: bool):
        """(crop box or None for the whole image, the units' cells there, their clean values)."""
        full = self._values(x[None], cells, channels)[0]
        whole = None, cells, full.double().cpu().numpy()
        plan = covering(self.layer, rfs, tuple(x.shape[1:])) if crop else None
        if plan is None or plan.box is None:
            return whole
        local = [plan.local(c) for c in cells]
        if min(min(c) for c in local) < 0:
            return whole
        try:
            mine = self._values(plan.take(x[None]), local, channels)[0]
        except (IndexError, RuntimeError, RFLensError):
            return whole  # the crop's grid does not hold the units
        # checked, not proved: a crop that sees other values (a global op, padding that depends on
        # the input's size) is caught here, for the price of the forward the clean values need anyway
        if not torch.allclose(mine, full, rtol=1e-4, atol=1e-5 * float(full.abs().max()) + 1e-12):
            return whole
        self.crops += 1
        return tuple(zip(*plan.box)), local, mine.double().cpu().numpy()

    def _occluded(self, x, corners, patches, use, region, cells, channels, clean) -> np.ndarray:
        """Activation drops (units, positions) for positions ``use`` (others stay 0)."""
        (y0, x0), (y1, x1) = region if region is not None else ((0, 0), tuple(x.shape[1:]))
        base = x[:, y0:y1, x0:x1]
        s = self.occluder.size

        def values(chunk):
            batch = base.expand(len(chunk), *base.shape).clone()
            for i, p in enumerate(chunk):
                cy, cx = corners[p]
                ty, tx = max(cy, y0), max(cx, x0)
                by, bx = min(cy + s, y1), min(cx + s, x1)
                if ty < by and tx < bx:
                    batch[i, :, ty - y0:by - y0, tx - x0:bx - x0] = patches[p][:, ty - cy:by - cy, tx - cx:bx - cx]
            return self._values(batch, cells, channels)
        return self._drops(use, len(corners), clean, values)

    def _drops(self, use: np.ndarray, positions: int, clean: np.ndarray, values) -> np.ndarray:
        """Drops (units, positions): ``clean`` minus ``values(chunk)`` (B, units) for the positions
        ``use``, a batch at a time; 0 at the other positions."""
        drops = np.zeros((len(clean), positions))
        for b in range(0, len(use), self.batch_size):
            chunk = use[b:b + self.batch_size]
            drops[:, chunk] = clean[:, None] - values(chunk).double().cpu().numpy().T
        return drops

    def _incremental(self, x, corners, patches, use, cells, channels) -> tuple[np.ndarray, np.ndarray]:
        """Drops (units, positions) for positions ``use`` from incremental re-inference."""
        plan = self.incremental
        clean = plan.prepare(x[None], cells, channels).double().cpu().numpy()
        at = np.asarray(corners, dtype=np.int64)
        return clean, self._drops(use, len(corners), clean, lambda chunk: plan.values(
            at[chunk], patches[torch.as_tensor(chunk, device=patches.device)]))

    def _naive(self, x, corners, patches, cells, channels) -> tuple[np.ndarray, np.ndarray]:
        s = self.occluder.size
        drops = np.zeros((len(cells), len(corners)))
        out = self._full_forward(x[None])
        clean = np.array([float(out[0, c, y, x0]) for c, (y, x0) in zip(channels, cells)])
        for u, (c, (uy, ux)) in enumerate(zip(channels, cells)):
            for p, (cy, cx) in enumerate(corners):
                xo = x.clone()
                xo[:, cy:cy + s, cx:cx + s] = patches[p]
                drops[u, p] = clean[u] - float(self._full_forward(xo[None])[0, c, uy, ux])
        return clean, drops


def _spread(values: np.ndarray, occluder: Occluder, shape: tuple[int, int]) -> np.ndarray:
    """Per pixel, the mean of ``values`` (one per occluder position) over the occluders covering
    it; 0 where none does."""
    s, st = occluder.size, occluder.stride
    v = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))[None, None]
    ones = torch.ones((1, 1, s, s), dtype=torch.float64)
    total = F.conv_transpose2d(v, ones, stride=st)[0, 0]
    count = F.conv_transpose2d(torch.ones_like(v), ones, stride=st)[0, 0]
    heat = np.zeros(shape)
    h, w = total.shape
    heat[:h, :w] = (total / count).numpy()
    return heat
