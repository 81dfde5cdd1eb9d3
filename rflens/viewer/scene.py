"""What the viewer shows, as JSON-ready data: the layer table, one unit's exact field, the units
that see a pixel, and (for the static page) the engine's whole geometry in compact form.

Masks travel as run lengths or packed bits, whichever is shorter (``encode_mask``); the static
page gets the per-axis dependency matrices the engine itself keeps (a unit's mask is a union of
outer products of their rows), so it computes exact masks and projective fields offline, for
all the channels at a position or for one (a neuron).
"""

from __future__ import annotations

import base64
import io
import json
import threading
from pathlib import Path

import numpy as np
from torch import nn

from ..engine.analyze import analyze, parse_input_size
from ..errors import RFLensError, UnitError
from ..engine.analysis import Analysis
from ..engine.field import Layer
from ..methods.images import Picture, load_image


def encode_mask(mask: np.ndarray) -> dict:
    """A boolean array in row-major order as ``{"shape", "rle"}`` (run lengths, the first run
    False) or ``{"shape", "bits"}`` (``np.packbits``, base64), whichever is shorter in JSON.

    >>> row = np.zeros((1, 64), bool)
    >>> row[0, 10:20] = True
    >>> encode_mask(row)
    {'shape': [1, 64], 'rle': [10, 10, 44]}
    >>> encode_mask(np.eye(4, dtype=bool))
    {'shape': [4, 4], 'bits': 'hCE='}
    >>> bool((decode_mask(encode_mask(row)) == row).all())
    True
    """
    flat = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
    shape = list(np.shape(mask))
    if flat.size == 0:
        return {"shape": shape, "rle": []}
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    rle_chars = int(np.sum(np.floor(np.log10(np.maximum(runs, 1))) + 2))  # digits and a comma each
    bits_chars = 4 * ((flat.size + 7) // 8 + 2) // 3
    if rle_chars <= bits_chars:
        return {"shape": shape, "rle": runs.tolist()}
    return {"shape": shape, "bits": _b64(np.packbits(flat))}


def decode_mask(data: dict) -> np.ndarray:
    """The inverse of ``encode_mask`` (the page does the same in JavaScript)."""
    shape = tuple(data["shape"])
    n = int(np.prod(shape))
    if "bits" in data:
        raw = np.frombuffer(base64.b64decode(data["bits"]), np.uint8)
        return np.unpackbits(raw, count=n).astype(bool).reshape(shape)
    runs = np.asarray(data["rle"], np.int64)
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(shape)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


class Scene:
    """One model at one input size, with an optional picture, ready to be viewed.

    ``model`` may be built on the meta device (geometry only) or hold real weights, in which
    case gradient RFs and ERFs can be computed (by the server).  Only 2-D inputs are drawn.

    >>> import torchvision
    >>> s = Scene(torchvision.models.vgg16(), (3, 224, 224), name="vgg16")
    >>> s.unit("features.29", (7, 7))["box"]
    [[22, 218], [22, 218]]
    >>> s.projective("features.29", (0, 0))["count"]  # rows 0-5 x columns 0-5
    36
    """

    def __init__(self, model: nn.Module, input_size, image: str | Path | Picture | None = None,
                 name: str = "", weights: str = "", analysis: Analysis | None = None):
        size = parse_input_size(input_size)
        if len(size) != 3:
            raise RFLensError(f"the viewer draws 2-D inputs (C x H x W); this input size is "
                              f"{'x'.join(map(str, size))}")
        self.model = model
        self.input_size = size
        self.name = name or type(model).__name__
        self.weights = weights
        self.analysis = analysis or analyze(model, size)
        self.picture = image if isinstance(image, Picture) or image is None else load_image(image, size[1:])
        self.image_name = "" if image is None or isinstance(image, Picture) else Path(image).name
        self.lock = threading.Lock()  # the engine's per-layer caches are filled on first use
        # the page draws fields: layers refused by a value-dependent op (a detector's top-k) have none
        self.table = [_table_row(self.analysis[n]) for n in self.analysis.layers if not self.analysis[n].refused]
        # listed in the page's table (at their place in the model) so that a missing layer says why
        self.refused = [{"name": n, "op": self.analysis[n].op, "index": i, "why": self.analysis[n].refusal.op,
                         "module": self.analysis[n].refusal.module, "message": self.analysis[n].refused}
                        for i, n in enumerate(self.analysis.layers) if self.analysis[n].refused]

    # -- what the page asks -------------------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        return bool(tensors) and not any(t.is_meta for t in tensors)

    def meta(self) -> dict:
        """Everything the page needs first: model, input, picture, layer table (``layers``: the
        layers with a field; ``refused``: the others, each with its ``index`` in the model's order
        and the refusal's message)."""
        return {
            "model": self.name,
            "input_size": list(self.input_size),
            "image": self.image_name if self.picture is not None else None,
            "transform": self.picture.transform if self.picture is not None else None,
            "gradients": self.has_weights,
            "weights": self.weights,
            "layers": self.table,
            "refused": self.refused,
            "default_layer": self.default_layer(),
        }

    def default_layer(self) -> str:
        """The layer shown first: the deepest one with a 2-D grid and a local field (where a unit's
        field is a box worth drawing), else the first."""
        good = [r["name"] for r in self.table if len(r["grid"]) == 2 and not r["global"]]
        return good[-1] if good else self.table[0]["name"]

    def layer(self, name: str) -> Layer:
        return self.analysis[name]

    def unit(self, layer: str, index, channel: int | None = None) -> dict:
        """One unit's exact field: mask (compact), boxes, centre, support size; with ``channel``,
        that one neuron's (None: the union over the channels at the position)."""
        with self.lock:
            L = self.analysis[layer]
            u = L.unit(tuple(index), channel=channel)
        return {
            "layer": L.name,
            "unit": list(u.index),
            "channel": u.channel,
            "box": [list(b) for b in u.box],
            "unclipped_box": [list(b) for b in u.unclipped_box],
            "center": list(u.center),
            "support_size": u.support_size,
            "mask": encode_mask(u.mask),
        }

    def projective(self, layer: str, pixel, channel: int | None = None) -> dict:
        """The units of ``layer`` that see input ``pixel`` (row, column): a bool grid, compact;
        with ``channel``, the positions whose neuron of that channel sees it."""
        pixel = self.pixel(pixel)
        with self.lock:
            seen = self.analysis[layer].for_channel(channel).projective_field(pixel)
        return {"layer": layer, "pixel": list(pixel), "channel": channel, "count": int(seen.sum()),
                "units": encode_mask(seen)}

    def pixel(self, pixel) -> tuple[int, int]:
        """``pixel`` (row, column) as ints, refused where it is not a pixel of the input."""
        pixel = tuple(int(p) for p in pixel)
        h, w = self.input_size[1:]
        if len(pixel) != 2 or not (0 <= pixel[0] < h and 0 <= pixel[1] < w):
            raise UnitError(f"pixel {pixel} is outside the {h}x{w} input")
        return pixel

    def image_png(self) -> bytes | None:
        """The picture as the model sees it (fitted to the input size), or None."""
        if self.picture is None:
            return None
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray((np.clip(self.picture.pixels, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
        return buf.getvalue()

    def image_data_url(self) -> str | None:
        """The picture as a ``data:`` URL (for a page or a widget that has no server), or None."""
        png = self.image_png()
        return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")

    # -- the static page ----------------------------------------------------------------------
    def geometry(self) -> dict:
        """The engine's dependency structure, for exact masks and projective fields in the page.

        ``fields`` lists what units read, once for all the layers that read alike (a ReLU reads
        what its convolution reads): ``entries`` (which node each unit reads, at which node
        position: ``null`` where it is the unit's own index) and the unclipped boxes ``lo``/``hi``
        per axis (a vector along one grid axis where they vary only along it).  Per layer:
        ``field``, the union over its channels, and ``channels``: ``null`` where every channel
        reads alike, else runs ``[field, count]`` over the channels (a DenseNet block: one run per
        layer of the block).  Per node: its terms, each a packed bool matrix (node grid x input)
        per axis.

        >>> import torchvision
        >>> g = Scene(torchvision.models.densenet121(), (3, 64, 64)).geometry()
        >>> [count for _, count in g["layers"]["features.denseblock1"]["channels"]]
        [64, 32, 32, 32, 32, 32, 32]
        >>> g["layers"]["features.conv0"]["channels"] is None
        True
        """
        out = _Geometry(self.analysis)
        layers = {}
        for name in self.analysis.layers:
            L = self.analysis[name]
            if L.refused:
                continue
            layers[name] = {"field": out.field(L), "channels": out.channel_runs(L)}
        return {"nodes": out.nodes, "fields": out.fields, "layers": layers}


def _table_row(L: Layer) -> dict:
    """A layer's line of the page's table: the engine's summary, the grid, the channel count
    (None without a channel dim) and, where the field varies by channel, the channel groups as
    columns (``stop``: where each run of channels ends): DenseNet-121 has some 1900 groups."""
    row = dict(L.to_dict(), grid=list(L.grid_shape), channels=L.channels if L.channel_dim is not None else None,
               channel_groups=None)
    if L.varies_by_channel:
        groups = [g.to_dict() for g in L.channel_groups]
        row["channel_groups"] = dict(stop=[g["channels"][1] for g in groups],
                                     **{k: [g[k] for g in groups] for k in ("rf_size", "stride", "start", "global")})
    return row


class _Geometry:
    """The static page's geometry, filled layer by layer: each node and each distinct field once."""

    def __init__(self, analysis: Analysis):
        self.analysis = analysis
        self.nodes: dict[str, dict] = {}
        self.fields: list[dict] = []
        self.seen: dict[tuple, int] = {}

    def field(self, L: Layer) -> int:
        """The index in ``fields`` of what ``L``'s units read (a channel's view: that channel's)."""
        grid = L.grid_shape
        own = np.indices(grid) if len(grid) == self.analysis.k else None
        entries = []
        for v, m, pos in L.dependencies:
            self._node(v)
            entries.append({
                "node": str(v),
                "units": None if m.all() else _b64(np.packbits(m.reshape(-1))),
                "pos": [None if own is not None and np.array_equal(p, own[ax])
                        else _b64(np.asarray(p, "<i4").reshape(-1)) for ax, p in enumerate(pos)],
            })
        lo, hi = L.bounds
        field = {"entries": entries, "lo": [_axis_values(x) for x in lo], "hi": [_axis_values(x) for x in hi]}
        key = (grid, json.dumps(field))
        if key not in self.seen:
            self.seen[key] = len(self.fields)
            self.fields.append(field)
        return self.seen[key]

    def channel_runs(self, L: Layer) -> list[list[int]] | None:
        """``[field, count]`` runs over ``L``'s channels, or None where every channel reads alike."""
        if L.channel_dim is None or L.channels < 2:
            return None
        kinds = L.channel_kinds.tolist()
        first: dict[int, int] = {}
        for c, k in enumerate(kinds):
            first.setdefault(k, c)
        if len(first) < 2:
            return None
        field = {k: self.field(L.for_channel(c)) for k, c in first.items()}  # one channel answers for its kind
        runs: list[list[int]] = []
        for k in kinds:
            if runs and runs[-1][0] == field[k]:
                runs[-1][1] += 1
            else:
                runs.append([field[k], 1])
        return runs if len(runs) > 1 else None

    def _node(self, v: int) -> None:
        if str(v) not in self.nodes:
            node = self.analysis.nodes[v]
            self.nodes[str(v)] = {"grid": list(node.grid),
                                  "terms": [[_b64(np.packbits(mat.reshape(-1))) for mat in term]
                                            for term in node.terms()]}


def _axis_values(values: np.ndarray) -> dict:
    """Float64 values over a layer's grid; only the vector along one grid axis where the rest
    repeats it (the usual case)."""
    values = np.asarray(values, "<f8")
    for axis in range(values.ndim):
        first = values[tuple(slice(None) if d == axis else slice(0, 1) for d in range(values.ndim))]
        if np.array_equal(np.broadcast_to(first, values.shape), values, equal_nan=True):
            return {"axis": axis, "values": _b64(first.reshape(-1))}
    return {"axis": None, "values": _b64(values.reshape(-1))}
