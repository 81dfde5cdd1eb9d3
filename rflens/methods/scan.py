"""A layer's top images: for every channel, the K inputs with the highest spatial-max activation
and where that maximum is (the first step of Zhou et al., ICLR 2015, and of NetDissect).

A scan is a set of shards merged exactly: each batch is a tiny scan merged into the running
one with the same ``Scan.merge`` that joins scans made on different machines, so the result
never depends on how the inputs were split.  Alongside the top K, a scan keeps every channel's
largest activations over all positions of all inputs, enough to give NetDissect's top-quantile
threshold exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deprecation import renamed
from ..engine.analyze import analyze
from ..errors import RFLensError, UnitError
from ..files import atomic_write, writable_folder
from ..engine.field import Layer
from .distributed import ExecutorLike, as_executor, run_jobs
from .progress import ProgressLike, reporting
from .running import (Checkpoint, Inputs, InputsLike, fingerprint, model_dtype, model_normalize, normalize_spec,
                      settings_diff)
from ..engine.trace import capture, fx_graph

TOP_FRACTION = 0.005  # NetDissect's top 0.5% of activations
SETTINGS = "settings.json"  # beside scan.npz in a scan folder: what the scan's own record leaves out


@dataclass(frozen=True)
class TopImage:
    """One of a channel's top inputs: its position in the source, name, score and the grid
    index of the maximum."""

    index: int
    name: str
    score: float
    where: tuple[int, ...]


@dataclass(frozen=True)
class Scan:
    """The top-``k`` inputs of every channel of ``layer``.

    ``scores``/``images``/``where`` are (C, k) / (C, k) / (C, k, axes) arrays in descending
    score order (ties: earlier input first); ``images`` holds positions in ``names`` (-1 where
    fewer than k inputs were seen).  ``tail`` holds each channel's ``m`` largest activations over
    every position of every input, ``m`` fixed from the source's size so that merging shards
    stays exact.
    """

    layer: str
    grid: tuple[int, ...]
    names: tuple[str, ...]
    scores: np.ndarray
    images: np.ndarray
    where: np.ndarray
    tail: np.ndarray
    seen: int
    skipped: tuple[tuple[str, str], ...] = ()
    config: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.scores.shape[1]

    @property
    def channels(self) -> int:
        return self.scores.shape[0]

    def top(self, channel: int) -> list[TopImage]:
        """The channel's top inputs, best first."""
        if not 0 <= channel < self.channels:
            raise UnitError(f"channel {channel} is outside layer '{self.layer}', which has "
                            f"{self.channels} channels (0..{self.channels - 1})")
        out = []
        for j in range(self.k):
            i = int(self.images[channel, j])
            if i >= 0:
                out.append(TopImage(i, self.names[i], float(self.scores[channel, j]),
                                    tuple(int(w) for w in self.where[channel, j])))
        return out

    def threshold(self, channel: int, fraction: float = TOP_FRACTION) -> float:
        """The activation level that the top ``fraction`` of the channel's activations (over
        all positions of all scanned inputs) reach: NetDissect's segmentation threshold."""
        m = math.ceil(fraction * self.seen * math.prod(self.grid))
        if m > self.tail.shape[1]:
            raise RFLensError(f"this scan kept the top {self.tail.shape[1]} activations per channel; "
                              f"the top {fraction:.2%} needs {m}")
        return float(self.tail[channel, max(0, m - 1)])

    def merge(self, other: Scan) -> Scan:
        """The scan of both inputs sets (exact: top-K of the union of top-Ks)."""
        if (self.layer, self.grid, self.names) != (other.layer, other.grid, other.names) or \
                _settings(self.config) != _settings(other.config):
            raise RFLensError("these scans do not belong together (different model, layer, settings or inputs)")
        scores = np.concatenate([self.scores, other.scores], 1)
        images = np.concatenate([self.images, other.images], 1)
        where = np.concatenate([self.where, other.where], 1)
        order = np.lexsort((np.where(images < 0, np.iinfo(np.int64).max, images), -scores), axis=1)[:, :self.k]
        tail = np.concatenate([self.tail, other.tail], 1)
        tail = -np.sort(-tail, axis=1)[:, :self.tail.shape[1]]
        take = np.take_along_axis
        return replace(self, scores=take(scores, order, 1), images=take(images, order, 1),
                       where=take(where, order[..., None], 1), tail=tail, seen=self.seen + other.seen,
                       skipped=self.skipped + other.skipped)

    def save(self, path: str | Path) -> None:
        """Write the scan to ``path`` (``.npz``), atomically."""
        Checkpoint(path, self.config, "scan").save(*self._arrays())

    def _arrays(self) -> tuple[dict, dict]:
        arrays = {"scores": self.scores, "images": self.images, "where": self.where, "tail": self.tail}
        record = {"layer": self.layer, "grid": list(self.grid), "names": list(self.names), "seen": self.seen,
                  "skipped": [list(s) for s in self.skipped]}
        return arrays, record

    @classmethod
    def load(cls, path: str | Path) -> Scan:
        """A scan saved by ``save`` or by ``top_images(..., out=...)``."""
        path = Path(path)
        if path.is_dir():
            path = path / "scan.npz"
        if not path.exists():
            raise RFLensError(f"no scan at '{path}' (make one with `rflens scan`)")
        config = _peek_config(path)
        arrays, record = Checkpoint(path, config, "scan").load()
        return cls._from(arrays, record, config)

    @classmethod
    def _from(cls, arrays: dict, record: dict, config: dict) -> Scan:
        return cls(record["layer"], tuple(record["grid"]), tuple(record["names"]), arrays["scores"],
                   arrays["images"], arrays["where"], arrays["tail"], int(record["seen"]),
                   tuple(tuple(s) for s in record["skipped"]), config)


def _settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "shard"}


def _peek_config(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["__config__"]))
    except (OSError, ValueError, KeyError) as e:
        raise RFLensError(f"'{path}' is not an rflens scan ({e})") from None


def _empty(layer: str, grid, names, channels: int, k: int, m: int, config: dict) -> Scan:
    return Scan(layer, tuple(grid), tuple(names), np.full((channels, k), -np.inf, np.float32),
                np.full((channels, k), -1, np.int64), np.zeros((channels, k, len(grid)), np.int64),
                np.full((channels, m), -np.inf, np.float32), 0, (), config)


def channel_layer(model: nn.Module, layer: str, input_size) -> Layer:
    """The named layer, checked to be laid out (N, C, *grid) as scans and occlusion assume."""
    found = analyze(model, input_size)[layer]
    nd = len(found.output_shape)
    if found.spatial_dims != list(range(2, nd)) or nd < 3:
        raise RFLensError(f"layer '{layer}' has output {tuple(found.output_shape)} with its grid in dims "
                          f"{found.spatial_dims}; top images need an (N, C, *grid) feature map")
    return found


def check_count(name: str, value: int | None, least: int = 1) -> None:
    """Refuse a count below ``least`` (None, not given, passes): a scan's ``k``, ``limit`` and
    ``batch_size``.  ``name`` is what the caller calls the count in the message (the CLI:
    ``--top-k``).

    >>> check_count("k", 0)
    Traceback (most recent call last):
    rflens.errors.RFLensError: k 0: must be at least 1
    """
    if value is not None and value < least:
        raise RFLensError(f"{name} {value}: must be at least {least}")


class ScanFolder:
    """A folder holding one scan, as ``rflens scan`` keeps it: ``scan.npz`` once finished,
    ``scan.partial.npz`` while under way (both written by ``top_images(..., out=folder)``), and
    ``settings.json``, what the scan's own record leaves out (the model as named, which weights,
    the normalisation and the limit as given).

    It refuses to mix settings: scanning on into a folder with another normalisation or limit
    (the old scan would be answered, or resumed into a mix of both), or reading a scan back with
    other weights.  Its messages name the ``rflens scan`` flags behind each setting, and quote
    the path as given.

    >>> import tempfile
    >>> folder = ScanFolder(tempfile.mkdtemp())
    >>> folder.state, folder.settings()
    ('new', None)
    >>> folder.create({"model": "resnet18", "normalize": (0.5, 0.5), "limit": None})
    >>> folder.settings()["normalize"], folder.normalize
    ([0.5, 0.5], (0.5, 0.5))
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.shown = str(path)

    @property
    def state(self) -> str:
        """``"finished"`` (scan.npz is there), ``"partial"`` (a scan to resume) or ``"new"``."""
        if (self.path / "scan.npz").exists():
            return "finished"
        return "partial" if (self.path / "scan.partial.npz").exists() else "new"

    def settings(self) -> dict | None:
        """The folder's ``settings.json`` as saved (None: there is none, or ``path`` is a file)."""
        path = self.path / SETTINGS
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RFLensError(f"cannot read '{path}': {e}") from None

    @property
    def normalize(self) -> tuple | None:
        """The normalisation the scan was made with, as ``normalize=`` takes it (None: ImageNet's,
        or no ``settings.json``)."""
        saved = (self.settings() or {}).get("normalize")
        return None if saved is None else tuple(tuple(v) if isinstance(v, list) else v for v in saved)

    def check_settings(self, normalize, limit: int | None) -> None:
        """Refuse to scan into this folder with another ``normalize`` or ``limit`` than the scan
        already there (finished or partial); a file in the way is refused too."""
        if self.path.exists() and not self.path.is_dir():
            raise RFLensError(f"--out '{self.shown}' is a file, not a folder")
        if self.path.is_dir():  # where the scan goes: refused now, not after the first batch
            writable_folder(self.path, f"cannot write the scan into '{self.shown}'")
        else:
            writable_folder(self.path.parent, f"cannot make '{self.shown}'")
        settings = self.settings()
        if settings is None or self.state == "new":
            return
        given = {"normalize": (_jsonable(normalize), normalize_spec), "limit": (limit, str)}
        for key, (value, show) in given.items():
            if settings.get(key) != value:
                was = "no --limit" if key == "limit" and settings.get(key) is None else \
                    f"--{key} {show(settings.get(key))}"
                raise RFLensError(f"'{self.shown}' holds a scan made with {was}; use the same, or another --out")

    def create(self, settings: dict) -> None:
        """Make the folder (its parent must exist) and write ``settings`` as its
        ``settings.json``, unless it holds a scan to resume with settings of its own."""
        if not self.path.is_dir():
            writable_folder(self.path.parent, f"cannot make '{self.shown}'")
            try:
                self.path.mkdir(exist_ok=True)
            except OSError as e:
                raise RFLensError(f"cannot make '{self.shown}': {e.strerror or e}") from None
        if self.settings() is None or self.state == "new":
            text = json.dumps({**settings, "normalize": _jsonable(settings.get("normalize"))}, indent=1) + "\n"
            atomic_write(self.path / SETTINGS, lambda tmp: Path(tmp).write_text(text))

    def load(self) -> Scan:
        """The finished scan (``path`` may also name a ``.npz`` file); a partial one is refused."""
        if self.path.is_dir() and self.state == "partial":
            raise RFLensError(f"the scan in '{self.shown}' is not finished: run the `rflens scan` command that "
                              "made it again to complete it")
        return Scan.load(self.path)

    def check_model(self, scan: Scan, model: nn.Module, weights: str, name: str = "") -> None:
        """Refuse ``model`` (called ``name``) where ``scan`` (this folder's) was made with other
        weights; ``weights`` says which the model holds (a file, or a seed)."""
        if scan.config.get("model") in (None, fingerprint(model)):
            return
        settings = self.settings() or {}
        then, made = settings.get("model", ""), settings.get("weights")
        if then and name and then != name:  # another model: its name says it, whatever the weights
            raise RFLensError(f"the scan in '{self.shown}' was made with {then}" + (f" ({made})" if made else "")
                              + f", not {name}; scan {name} into another folder, or pass {then}")
        made = f" ({made})" if made else ""
        raise RFLensError(f"the scan in '{self.shown}' was made with other weights{made} than these "
                          f"({weights}); pass the same model and --weights")


def _jsonable(normalize):
    """``normalize`` as ``settings.json`` keeps it (tuples become lists)."""
    return None if normalize is None else json.loads(json.dumps(normalize))


@renamed(images="inputs")
def top_images(model: nn.Module, layer: str, inputs: InputsLike, k: int = 10, *, input_size=None, normalize=None,
               limit: int | None = None, batch_size: int = 16, device=None, out: str | Path | None = None,
               shard: tuple[int, int] | None = None, top_fraction: float = TOP_FRACTION,
               progress: ProgressLike = None, executor: ExecutorLike = None) -> Scan:
    """For every channel of ``layer``, the ``k`` inputs with the highest spatial-max activation.

    ``inputs``: a folder of images (recursive, any file Pillow reads; unreadable files are
    skipped and listed in ``skipped``), a tensor (N, C, *spatial), a dataset or a DataLoader
    (see ``rflens.methods.running.Inputs``).  ``out``: a folder for ``scan.npz``; while
    scanning, progress is saved to ``scan.partial.npz`` (atomically, every batch), so an
    interrupted scan resumes where it stopped when called again, and the finished scan is
    returned at once.
    ``shard=(i, n)`` scans only the i-th of n equal blocks of the inputs; join the parts with
    ``Scan.merge``.  Inputs are run in batches of ``batch_size`` consecutive positions.
    ``progress``: None (a bar in a notebook, nothing elsewhere), False, True (a tqdm bar) or
    ``progress(done, total)``, called after each batch (``rflens.methods.progress``).
    ``executor="ray"`` (or a ``RayExecutor`` naming a cluster) runs the batches on Ray actors
    holding the model and merges their scans in order: the same scan, bit for bit, as here
    (needs ``pip install 'rflens[ray]'``; a folder's files must be readable at the same paths
    on every node).

    >>> import torch, rflens
    >>> net = torch.nn.Conv2d(1, 2, 3)
    >>> scan = rflens.top_images(net, "output", torch.rand(6, 1, 8, 8), k=3, device="cpu")
    >>> scan.scores.shape, len(scan.top(0))
    ((2, 3), 3)
    """
    check_count("k", k)
    check_count("limit", limit)
    check_count("batch_size", batch_size)
    normalize = model_normalize(model, normalize)
    ray = as_executor(executor)
    source = Inputs(inputs, input_size, limit, 0, normalize)
    if source.total is None:
        raise RFLensError("a scan needs to know how many inputs there are: pass a folder, a tensor, a dataset "
                          "or a DataLoader over a dataset")
    target = channel_layer(model, layer, source.size)
    grid = tuple(target.output_shape[2:])
    channels = target.output_shape[1]
    n = source.total
    start, stop = 0, n
    if shard is not None:
        i, parts = shard
        if not (parts >= 1 and 0 <= i < parts):
            raise RFLensError(f"shard {shard} must be (i, n) with 0 <= i < n")
        start, stop = i * n // parts, (i + 1) * n // parts
    m = max(1, math.ceil(top_fraction * n * math.prod(grid)))
    names = [str(p.resolve()) for p in source.files] if source.files is not None else [f"input {i}" for i in range(n)]
    config = {"layer": target.name, "k": k, "size": list(source.size), "source": source.describe,
              "normalize": [np.broadcast_to(np.asarray(v, float), (3,)).tolist() for v in (source.mean, source.std)],
              "limit": limit,
              "model": fingerprint(model), "top_fraction": top_fraction, "shard": list(shard) if shard else None}
    final = Path(out) / "scan.npz" if out is not None else None
    partial = Checkpoint(Path(out) / "scan.partial.npz" if out is not None else None, config, "scan")
    if final is not None:
        if Path(out).exists() and not Path(out).is_dir():
            raise RFLensError(f"'{out}' is a file: give a folder for the scan")
        try:
            Path(out).mkdir(parents=True, exist_ok=True)  # as the CLI's --out does
        except OSError as e:
            raise RFLensError(f"cannot make the folder '{out}' for the scan: {e.strerror or e}") from None
        writable_folder(out, f"cannot write the scan into '{out}'")
        if final.exists():
            done = Scan.load(final)
            if done.config != config:
                raise RFLensError(f"'{final}' holds a scan made with other settings "
                                  f"({settings_diff(done.config, config)}); delete it or choose another folder")
            return done
    scan = _empty(target.name, grid, names, channels, k, m, config)
    consumed = start
    saved = partial.load()
    if saved is not None:
        scan = Scan._from(saved[0], saved[1], config)
        consumed = saved[1]["consumed"]
    skipped = list(scan.skipped)
    # a job is a block of positions: a whole shard here (read in one pass), batches on Ray
    if ray is not None and source.iterable is not None:
        raise RFLensError("a scan on Ray reads its inputs by position: pass a folder, a list of image files, a "
                          "tensor or a dataset, not an iterable of batches")
    jobs = [(a, min(a + batch_size, stop)) for a in range(consumed, stop, batch_size)] if ray else [(consumed, stop)]
    like = replace(scan, names=())  # what a worker needs of the scan: not its (long) list of names
    with reporting(progress, f"scanning {target.name}", "image") as report:
        answers = run_jobs(ray, model, device, _scanner, (target.name, like, batch_size, source), jobs)
        with contextlib.closing(answers):
            for arrays, lost, n in answers:
                if arrays is not None:
                    scan = scan.merge(replace(scan, **arrays, skipped=()))
                skipped += lost
                consumed += n
                scan = replace(scan, skipped=tuple(skipped))
                arrays, record = scan._arrays()
                partial.save(arrays, {**record, "consumed": consumed})
                if report is not None:
                    report(consumed - start, stop - start)
    if scan.seen == 0 and shard is None:  # an empty scan would pass for a result
        partial.path and partial.path.unlink(missing_ok=True)
        raise RFLensError(f"nothing was scanned: all {len(skipped)} of the {source.describe} were skipped ("
                          + "; ".join(why for _, why in skipped[:3])
                          + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
                          + "); give images Pillow reads (JPEG, PNG, ...)")
    if final is not None:
        scan.save(final)
        partial.path.unlink(missing_ok=True)
    return scan


def _scanner(model: nn.Module, device: torch.device, layer: str, like: Scan, batch_size: int, source: Inputs):
    """The worker of a scan (``distributed.run_jobs``): for a job ``(start, stop)``, each
    ``batch_size`` positions' own scan as arrays (None where none loaded), the inputs that did
    not load, and the positions used."""
    graph, dtype = fx_graph(model), model_dtype(model)

    def work(job: tuple[int, int]) -> Iterator[tuple[dict | None, list, int]]:
        lost: list = []
        for batch in source.batches(batch_size, start=job[0], skipped=lost, stop=job[1], aligned=True):
            arrays = None
            if batch.inputs is not None:
                a = capture(model, batch.inputs.to(device, dtype), layer, graph)
                part = _batch_scan(like, a, batch.indices)
                arrays = {"scores": part.scores, "images": part.images, "where": part.where, "tail": part.tail,
                          "seen": part.seen}
            yield arrays, lost[:], batch.consumed
            lost.clear()
    return work


def _batch_scan(like: Scan, a: torch.Tensor, indices: list[int]) -> Scan:
    """A batch's own scan, shaped like ``like`` so the two merge."""
    flat = a.detach().flatten(2).float()  # (B, C, G)
    flat = torch.nan_to_num(flat, nan=-torch.inf)
    arg = flat.argmax(dim=2)  # the first maximum, so the answer is deterministic
    top = flat.gather(2, arg[..., None])[..., 0]
    b, c = top.shape
    k, m = like.k, like.tail.shape[1]
    scores = np.full((c, k), -np.inf, np.float32)
    images = np.full((c, k), -1, np.int64)
    where = np.zeros((c, k, len(like.grid)), np.int64)
    kk = min(k, b)
    s = top.T.cpu().numpy()
    ids = np.broadcast_to(np.asarray(indices, np.int64), (c, b))
    order = np.lexsort((ids, -s), axis=1)[:, :kk]
    scores[:, :kk] = np.take_along_axis(s, order, 1)
    images[:, :kk] = np.take_along_axis(ids, order, 1)
    cells = np.stack(np.unravel_index(arg.T.cpu().numpy(), like.grid), -1)  # (C, B, axes)
    where[:, :kk] = np.take_along_axis(cells, order[..., None], 1)
    values = flat.transpose(0, 1).reshape(c, -1)
    tail = torch.topk(values, min(m, values.shape[1]), dim=1).values.cpu().numpy()
    full_tail = np.full((c, m), -np.inf, np.float32)
    full_tail[:, :tail.shape[1]] = tail
    return replace(like, scores=scores, images=images, where=where, tail=full_tail, seen=b, skipped=())
