"""The analysis of a model: every named layer's exact receptive fields at one input size."""

from __future__ import annotations

import math

from ..errors import LayerNotFoundError
from .field import KEEP_UNITS, Layer
from .trace import Flow, Record


class Analysis:
    """The exact receptive fields of every layer of a model at one input size.

    >>> import torchvision, rflens
    >>> a = rflens.analyze(torchvision.models.resnet18(), (3, 224, 224))
    >>> a["layer1.0.add"].rf_size, a["layer1.0.add"].stride, a["layer1.0.add"].start
    ((27, 27), (4, 4), (-13, -13))
    >>> unit = a["layer1.0.add"].unit((0, 0))
    >>> unit.box, unit.unclipped_box
    (((0, 14), (0, 14)), ((-13, 14), (-13, 14)))
    """

    def __init__(self, flow: Flow, records: dict[str, Record], order: list[str], input_size,
                 model_name: str = ""):
        self.model_name = model_name
        self.nodes = flow.table.nodes
        self.k = flow.k
        self.input_size = tuple(input_size)
        self.spatial = tuple(input_size[1:])
        self._records = records
        self._order = order
        self._layers: dict[str, Layer] = {}
        self._shared: dict[tuple, object] = {}  # what layers naming one tensor compute once (Layer._shared)

    @property
    def layers(self) -> list[str]:
        return list(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self):
        return (self[n] for n in self._order)

    def __contains__(self, name: str) -> bool:
        return name in self._records

    def __getitem__(self, name: str) -> Layer:
        if name not in self._records:
            raise LayerNotFoundError(name, self._order)
        if name not in self._layers:
            self._layers[name] = Layer(self, self._records[name])
        return self._layers[name]

    def table(self) -> list[dict]:
        """Every layer's row (``Layer.to_dict``).  The rows of the names of one tensor are made
        together; where its grid is large, its per-unit arrays are then dropped, so a table at a
        large input size needs the memory of its largest layer, not of all of them at once."""
        rows: dict[str, dict] = {}
        tensors: dict[int, list[str]] = {}
        for n in self._order:
            tensors.setdefault(id(self._records[n].tracked), []).append(n)
        for key, names in tensors.items():
            rows.update((n, self[n].to_dict()) for n in names)
            if math.prod(self[names[0]].grid_shape) > KEEP_UNITS:  # as field.py keeps hulls
                for n in names:
                    del self._layers[n]
                for k in [k for k in self._shared if k[0] == key]:
                    del self._shared[k]
        return [rows[n] for n in self._order]

    def plot(self, layers: str = "conv,pool"):
        """RF size and stride against depth (a matplotlib Figure)."""
        from ..plot import analysis_plot
        return analysis_plot(self, layers)

    def plot_grid(self, unit, layers: str = "conv,pool"):
        """One panel per layer with the same unit's RF (indices clamped to smaller grids)."""
        from ..plot import analysis_plot_grid
        return analysis_plot_grid(self, unit, layers)

    def _repr_html_(self) -> str:
        import html
        head = ["layer", "op", "output", "RF", "stride", "start", "global"]
        rows = []
        for r in self.table():
            if r["refused"]:
                shape = "?" if r["output_shape"] is None else "x".join(map(str, r["output_shape"]))
                cells = [r["name"], r["op"], shape, "", "", "", f"refused at {r['refused']['op']}"]
            else:
                glob = r["global"] and r["local_rf_size"] is not None and None not in r["local_rf_size"]
                rf, stride, start = ((r["local_rf_size"], r["local_stride"], r["local_start"]) if glob
                                     else (r["rf_size"], r["stride"], r["start"]))
                cells = [r["name"], r["op"], "x".join(map(str, r["output_shape"])),
                         "x".join(map(str, rf)), "x".join(map(str, stride)), "x".join(map(str, start)),
                         "global (local field shown)" if glob else "global" if r["global"] else ""]
            rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
        return (f"<p>{html.escape(self.model_name)} at {'x'.join(map(str, self.input_size))}: "
                f"{len(self)} layers</p><table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
                + "".join(rows) + "</table>")

    def __repr__(self) -> str:
        return f"<Analysis input={list(self.input_size)} layers={len(self)}>"
