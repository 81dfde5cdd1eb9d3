"""Running a model for real: device and dtype, frozen weights, inputs in a fixed order, and
resumable state.

Gradient and occlusion methods share this: each takes its ``inputs=`` through ``Inputs`` (noise,
a folder of images, a tensor, a dataset or loader) in an order that does not change between
runs, so a job interrupted after n inputs resumes from input n with ``Checkpoint``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import RFLensError
from ..files import atomic_write

# what an ``inputs=`` argument may be (see ``Inputs``): a count of noise inputs, a folder of
# images or a list of image files, an (N, C, *spatial) tensor, a map-style dataset, or an iterable of batches
InputsLike = Union[int, str, Path, torch.Tensor, Dataset, Iterable]


@contextlib.contextmanager
def prepared(model: nn.Module, device: torch.device) -> Iterator[None]:
    """The model on ``device`` without parameter gradients; put back as it was afterwards."""
    check_runnable(model)
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
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


def check_runnable(model: nn.Module) -> None:
    """Refuse a model that cannot run for real: weights on the meta device, or NaN / Inf ones."""
    if any(t.device.type == "meta" for t in list(model.parameters()) + list(model.buffers())):
        raise RFLensError("the model's weights are on the meta device (no values): gradients need real "
                          "weights; build it on the CPU or load a checkpoint (CLI: --weights PATH)")
    bad = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
           if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())]
    if bad:
        raise RFLensError(f"the model's weights hold NaN or Inf values (in {', '.join(bad[:3])}"
                          f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}): its activations and "
                          "gradients would be NaN. Check the weights file or the training run that made it.")


def pick_device(device=None) -> torch.device:
    """``device``, or CUDA when present, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype inputs should have: the first floating parameter's or buffer's."""
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def input_size_or_default(input_size) -> tuple[int, ...]:
    """(C, *spatial) from a tuple or "3x224x224"; 3x224x224 when not given."""
    from ..engine.analyze import parse_input_size
    return parse_input_size(input_size) if input_size is not None else (3, 224, 224)


def normalization(normalize) -> tuple:
    """(mean, std) for images: ImageNet statistics unless given."""
    from .images import IMAGENET_MEAN, IMAGENET_STD
    if normalize is None:
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise RFLensError("normalize must be a pair (mean, std)") from None
    return mean, std


def model_normalize(model: nn.Module, normalize):
    """``normalize``, or when it is not given the ``(mean, std)`` the model's weights were trained
    with (``model.rflens_normalize``, which rflens' trained networks carry); None: ImageNet's.

    >>> net = torch.nn.Conv2d(3, 1, 1)
    >>> model_normalize(net, None), model_normalize(net, (0.5, 0.5))
    (None, (0.5, 0.5))
    >>> net.rflens_normalize = (0.5, 0.5)
    >>> model_normalize(net, None)
    (0.5, 0.5)
    """
    return getattr(model, "rflens_normalize", None) if normalize is None else normalize


def parse_normalize(text: str | None, name: str = "normalize") -> tuple | None:
    """A normalisation written as text, turned into what ``normalize=`` takes: ``imagenet`` (or
    None) gives None (ImageNet statistics), ``none`` gives (0, 1) (pixels stay in [0, 1]),
    ``MEAN,STD`` one pair for every channel and ``M1,M2,M3,S1,S2,S3`` one per channel.  ``name``
    is what the caller calls the text in messages (the CLI: ``--normalize``).

    >>> parse_normalize("0.5,0.5"), parse_normalize("imagenet"), parse_normalize("none")
    ((0.5, 0.5), None, (0.0, 1.0))
    >>> parse_normalize("0.5")
    Traceback (most recent call last):
    rflens.errors.RFLensError: normalize '0.5': use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or M1,M2,M3,S1,S2,S3
    """
    if text is None or text.strip().lower() == "imagenet":
        return None
    if text.strip().lower() == "none":
        return (0.0, 1.0)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6):
        raise RFLensError(f"{name} {text!r}: use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or M1,M2,M3,S1,S2,S3")
    half = len(values) // 2
    mean, std = values[:half], values[half:]
    if min(std) <= 0:
        raise RFLensError(f"{name} {text!r}: the standard deviation must be positive")
    return (mean[0], std[0]) if half == 1 else (tuple(mean), tuple(std))


def normalize_spec(normalize) -> str:
    """The text ``parse_normalize`` reads back as ``normalize`` (None: ``imagenet``); lists, as
    JSON gives them back, do as well as tuples.

    >>> normalize_spec((0.5, 0.5)), normalize_spec(None), normalize_spec([[0.1, 0.2, 0.3], [1, 1, 1]])
    ('0.5,0.5', 'imagenet', '0.1,0.2,0.3,1,1,1')
    """
    if normalize is None:
        return "imagenet"
    mean, std = normalize
    return ",".join(str(v) for v in (np.atleast_1d(mean).tolist() + np.atleast_1d(std).tolist()))


def fingerprint(model: nn.Module) -> str:
    """Names, shapes and sums of the weights: enough to refuse resuming with another model."""
    h = hashlib.sha256()
    with torch.no_grad():
        for n, t in list(model.state_dict().items()):
            h.update(f"{n}{tuple(t.shape)}".encode())
            if t.device.type != "meta" and t.is_floating_point() and t.numel():
                h.update(f"{float(t.double().sum()):.10g}".encode())
    return h.hexdigest()[:16]


def settings_diff(saved: dict, now: dict) -> str:
    """Which settings of a saved run differ from this one's, and how, in words.

    >>> settings_diff({"mode": "luo", "k": 5, "model": "3f2a"}, {"mode": "replknet", "k": 5, "model": "9b1c"})
    "mode: 'luo' then, 'replknet' now; other weights (fingerprint 3f2a then, 9b1c now)"
    """
    def text(v) -> str:
        t = repr(v)
        return t if len(t) <= 60 else t[:57] + "..."
    parts = [f"other weights (fingerprint {saved.get(k)} then, {now[k]} now)" if k == "model"
             else f"{k}: {text(saved.get(k))} then, {text(now[k])} now" for k in now if saved.get(k) != now[k]]
    return "; ".join(parts) or "an older format"


@dataclass
class Batch:
    """Inputs that loaded (``inputs``, their positions ``indices`` in the source's order and
    ``labels``), and how many positions of the source this batch used up, loaded or not."""

    inputs: torch.Tensor | None
    indices: list[int]
    labels: list[str]
    consumed: int


class Inputs:
    """Inputs in a fixed order, so a run can resume after the ones it has used.

    ``inputs``: an int N (N standard Gaussian noise inputs of ``input_size``, one seeded
    generator per input, so nothing depends on the batch size), a folder of images (recursive;
    any file Pillow reads, resized and centre-cropped to ``input_size``, normalised with
    ``normalize``) or a list of image files, a tensor (N, C, *spatial), a map-style dataset whose items are tensors or
    ``(tensor, label)`` pairs, or an iterable of batches (such as a DataLoader).
    """

    def __init__(self, inputs: InputsLike, input_size=None, limit: int | None = None, seed: int = 0, normalize=None):
        self.seed, self.limit = seed, limit
        self.mean, self.std = normalization(normalize)
        self.files: list[Path] | None = None
        self.tensor: torch.Tensor | None = None
        self.dataset = None
        self.iterable: Iterable | None = None
        if isinstance(inputs, bool):
            raise RFLensError("inputs must be a count, a folder, a tensor, a dataset or an iterable of batches")
        if isinstance(inputs, int):
            if inputs < 1:
                raise RFLensError(f"the number of noise inputs must be at least 1, not {inputs}")
            self.size = input_size_or_default(input_size)
            self.count: int | None = inputs
            self.describe = f"{inputs} Gaussian noise inputs (seed {seed})"
        elif isinstance(inputs, (str, Path)):
            from .images import image_files
            self.size = input_size_or_default(input_size)
            self.files = image_files(inputs)
            self.count = len(self.files)
            self.describe = f"images in {inputs}"
        elif isinstance(inputs, (list, tuple)) and inputs and all(isinstance(p, (str, Path)) for p in inputs):
            self.size = input_size_or_default(input_size)
            self.files = [Path(p) for p in inputs]  # in the order given; one that does not load is skipped
            self.count = len(self.files)
            self.describe = f"{len(inputs)} image files"
        elif isinstance(inputs, torch.Tensor):
            if inputs.ndim < 3:
                raise RFLensError(f"an input tensor must be (N, C, *spatial), not {tuple(inputs.shape)}")
            self.tensor = inputs.detach()
            self.size = tuple(inputs.shape[1:])
            self.count = inputs.shape[0]
            self.describe = f"a tensor of {inputs.shape[0]} inputs"
        elif hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__") and not isinstance(inputs, Iterable):
            self.dataset = inputs
            if len(inputs) == 0:
                raise RFLensError("the dataset is empty")
            self.size = tuple(_sample(inputs[0]).shape)
            self.count = len(inputs)
            self.describe = f"{type(inputs).__name__} of {len(inputs)} inputs"
        elif isinstance(inputs, Iterable):
            self.iterable = inputs
            first = next(iter(inputs), None)
            t = _sample(first)
            if not isinstance(t, torch.Tensor) or t.ndim < 3:
                raise RFLensError("an iterable of inputs must yield (N, C, *spatial) tensors or (tensor, label) pairs")
            self.size = tuple(t.shape[1:])
            self.count = len(inputs.dataset) if hasattr(inputs, "dataset") else None
            self.describe = f"{type(inputs).__name__} of inputs"
        else:
            raise RFLensError("inputs must be a count, a folder, a tensor, a dataset or an iterable, "
                              f"not {type(inputs).__name__}")
        if limit is not None and self.count is not None:
            self.count = min(self.count, limit)

    @property
    def total(self) -> int | None:
        return self.count

    def _checked(self, i: int, t) -> tuple[int, torch.Tensor | None, str]:
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != self.size:
            what = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            return i, None, f"input {i}\t{what} differs from {self.size}"
        return i, t, f"input {i}"

    def samples(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, torch.Tensor | None, str]]:
        """(position, tensor or None where it did not load, label or "label\treason") for
        positions ``start`` to ``stop`` (default: the end)."""
        end = self.count if stop is None or self.count is None else min(stop, self.count)
        if self.files is not None:
            from .images import load_image, to_tensor
            for i in range(start, end):
                path = self.files[i]
                try:
                    yield i, to_tensor(load_image(path, self.size[1:]), self.size[0], self.mean, self.std), str(path)
                except RFLensError as e:
                    yield i, None, f"{path}\t{e}"
        elif self.tensor is not None:
            for i in range(start, end):
                yield i, self.tensor[i], f"input {i}"
        elif self.dataset is not None:
            for i in range(start, end):
                yield self._checked(i, _sample(self.dataset[i]))
        elif self.iterable is not None:
            i = 0
            for item in self.iterable:
                for t in _sample(item):
                    if (self.limit is not None and i >= self.limit) or (stop is not None and i >= stop):
                        return
                    if i >= start:
                        yield self._checked(i, t)
                    i += 1
        else:
            for i in range(start, end):
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
                yield i, torch.randn(self.size, generator=gen), f"noise {i}"

    def batches(self, batch_size: int, start: int, skipped: list, stop: int | None = None,
                aligned: bool = False) -> Iterator[Batch]:
        """Batches of ``batch_size`` loaded inputs from position ``start`` to ``stop``; inputs
        that do not load are appended to ``skipped`` as (label, reason).  ``aligned``: each batch
        is instead the inputs that loaded among ``batch_size`` consecutive positions, so a batch
        is the same whoever runs it (one process, or a Ray actor given just those positions)."""
        pending: list[tuple[int, torch.Tensor, str]] = []
        consumed = 0
        for i, t, label in self.samples(start, stop):
            consumed += 1
            if t is None:
                skipped.append(tuple(label.split("\t", 1)))
            else:
                pending.append((i, t, label))
            if (consumed if aligned else len(pending)) == batch_size:
                yield _batch(pending, consumed)
                pending, consumed = [], 0
        if pending or consumed:
            yield _batch(pending, consumed)


def _sample(item):
    """The tensor of a dataset item or a loader's batch: itself, or the first of a pair."""
    return item[0] if isinstance(item, (tuple, list)) else item


def _batch(pending, consumed: int) -> Batch:
    inputs = torch.stack([p[1] for p in pending]) if pending else None
    return Batch(inputs, [p[0] for p in pending], [p[2] for p in pending], consumed)


class Checkpoint:
    """Arrays and a JSON record kept in one ``.npz`` file, replaced atomically on every save;
    opening it checks it was made with the same settings (``config``)."""

    def __init__(self, path: str | Path | None, config: dict, what: str = "rflens"):
        self.path = Path(path) if path is not None else None
        self.config = config
        self.what = what

    def load(self) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, record) saved earlier, or None where there is nothing to resume."""
        if self.path is None or not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as f:
                saved = json.loads(str(f["__config__"]))
                record = json.loads(str(f["__record__"]))
                arrays = {k: f[k] for k in f.files if not k.startswith("__")}
        except (OSError, ValueError, KeyError) as e:
            raise RFLensError(f"cannot resume from '{self.path}': not an {self.what} checkpoint ({e})") from None
        if saved != self.config:
            raise RFLensError(f"checkpoint '{self.path}' was made with other settings "
                              f"({settings_diff(saved, self.config)}); delete it or choose another path")
        return arrays, record

    def save(self, arrays: dict[str, np.ndarray], record: dict) -> None:
        if self.path is None:
            return

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, __config__=json.dumps(self.config), __record__=json.dumps(record), **arrays)
        atomic_write(self.path, write)
