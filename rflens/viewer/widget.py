"""The viewer inline in a notebook (JupyterLab, VS Code, Colab): ``widget(model)`` shows the same
view as ``rflens view`` (pick a layer, click a unit, see its exact field; pick a channel; click
the input, see the units that see that pixel) in the cell's output, with no server to start.

It is an anywidget: the page's own script (``assets/view.js``) with a short module for the
notebook (``assets/widget.js``); the kernel answers the view's questions over the widget's
comm, as the server answers the page's, from the same ``Scene``.  The selection (``layer``,
``unit``, ``channel``, ``pixel``) is state synced both ways: a click shows in Python, and
Python may select.

>>> import torchvision
>>> view = widget(torchvision.models.resnet18(weights=None), (3, 224, 224), layer="layer2")
>>> view.unit, view.field.box
([14, 14], ((63, 162), (63, 162)))
>>> view.select("layer4", (6, 6)).unclipped_box
((-25, 410), (-25, 410))
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..engine.analysis import Analysis
from ..engine.field import Layer, Unit
from ..errors import RFLensError
from ..methods.images import Picture
from .scene import Scene
from .server import asset

try:
    import anywidget
    import traitlets
except ImportError:  # an optional extra: the rest of rflens works without it
    raise RFLensError("the notebook widget needs anywidget: pip install 'rflens[notebook]' "
                      "(or pip install anywidget)") from None


def _markup() -> str:
    """The page's markup (index.html between <body> and its script): one copy for both."""
    page = asset("index.html").decode()
    start, stop = page.find("<header>"), page.find("<script")
    if start < 0 or stop < start:
        raise RuntimeError("index.html lost its <header> or <script>")
    return page[start:stop]


class Widget(anywidget.AnyWidget):
    """The viewer of one ``Scene`` in a notebook cell; ``widget(...)`` makes one.

    ``layer``, ``unit`` (a position on the layer's grid), ``channel`` (None: all the channels at
    the position) and ``pixel`` (the input pixel whose projective field is shown, or None) are
    what the view shows; they follow clicks, and setting them (or ``select``) moves the view.
    ``field`` is the selected unit's field (a ``Unit``: box, mask, ...), ``analysis`` the whole
    analysis.  A new layer keeps the unit and channel where they exist on it, else it shows its
    centre unit and all its channels.
    """

    _esm = asset("view.js", "widget.js").decode()
    _css = asset("viewer.css").decode()
    _markup = traitlets.Unicode(_markup()).tag(sync=True)
    _meta = traitlets.Dict().tag(sync=True)
    _image = traitlets.Unicode("").tag(sync=True)
    layer = traitlets.Unicode("").tag(sync=True)
    unit = traitlets.List(traitlets.Int()).tag(sync=True)
    channel = traitlets.Int(None, allow_none=True).tag(sync=True)
    pixel = traitlets.List(traitlets.Int(), default_value=None, allow_none=True).tag(sync=True)

    def __init__(self, scene: Scene, layer: str | None = None, unit=None, channel: int | None = None):
        self.scene = scene
        # gradient RFs and ERFs run as the server's jobs: the notebook has gradient_field for them
        super().__init__(_meta=dict(scene.meta(), gradients=False), _image=scene.image_data_url() or "")
        self.select(layer or scene.default_layer(), unit, channel)
        self.on_msg(self._answer)

    @property
    def analysis(self) -> Analysis:
        return self.scene.analysis

    @property
    def field(self) -> Unit:
        """The selected unit's field (of its channel, or the union over the channels)."""
        return self._layer(self.layer).unit(tuple(self.unit), channel=self.channel)

    def select(self, layer: str, unit=None, channel: int | None = None) -> Unit:
        """Show ``unit`` of ``layer`` (default: its centre unit), of ``channel`` (None: all the
        channels at the position); returns its field.  Refused with an ``RFLensError`` where the
        layer, unit or channel does not exist."""
        chosen = self._layer(layer).unit("center" if unit is None else unit, channel=channel)
        with self.hold_sync(), self.hold_trait_notifications():
            self.layer, self.unit, self.channel = layer, list(chosen.index), channel
        return chosen

    # -- the selection, checked: a click sends only what exists, Python may send anything ------
    def _layer(self, name: str) -> Layer:
        L = self.scene.layer(name)
        if L.refused:
            raise RFLensError(f"layer '{name}' has no field to show: {L.refused}")
        return L

    @traitlets.validate("layer")
    def _valid_layer(self, proposal):
        return self._layer(proposal["value"]).name

    @traitlets.validate("unit")
    def _valid_unit(self, proposal):
        return list(self._layer(self.layer).unit(tuple(proposal["value"])).index)

    @traitlets.validate("channel")
    def _valid_channel(self, proposal):
        channel = proposal["value"]
        return channel if channel is None else self._layer(self.layer).for_channel(channel).channel

    @traitlets.validate("pixel")
    def _valid_pixel(self, proposal):
        return None if proposal["value"] is None else list(self.scene.pixel(proposal["value"]))

    @traitlets.observe("layer")
    def _new_layer(self, change) -> None:
        L = self._layer(change["new"])
        grid = L.grid_shape
        fits = len(self.unit) == len(grid) and all(0 <= u < n for u, n in zip(self.unit, grid))
        keeps = self.channel is None or (L.channel_dim is not None and self.channel < L.channels)
        if not (fits and keeps):
            with self.hold_sync(), self.hold_trait_notifications():
                if not fits:
                    self.unit = list(L.unit("center").index)
                if not keeps:
                    self.channel = None

    # -- the view's questions, answered as the server answers the page ------------------------
    def _answer(self, _widget, content: dict, _buffers) -> None:
        try:
            self.send({"id": content.get("id"), "answer": self._ask(content)})
        except (TypeError, ValueError) as e:  # RFLensError is a ValueError
            self.send({"id": content.get("id"), "error": str(e)})

    def _ask(self, content: dict) -> dict:
        what = content.get("what")
        where = {"unit": "unit", "projective": "pixel"}.get(what)
        if where is None or "layer" not in content or where not in content:
            raise RFLensError(f"the widget answers what='unit' (layer, unit) and what='projective' (layer, pixel), "
                              f"not {what!r} with {sorted(content)}")
        return getattr(self.scene, what)(content["layer"], content[where], content.get("channel"))


def widget(model: nn.Module, input_size=(3, 224, 224), *, image: str | Path | Picture | None = None,
           layer: str | None = None, unit=None, channel: int | None = None, name: str = "",
           analysis: Analysis | None = None) -> Widget:
    """The interactive viewer of ``model`` at ``input_size`` in a notebook cell: pick a layer,
    click a unit, see its exact field (on ``image``, fitted to the input, or a blank input).
    ``layer``/``unit``/``channel`` choose what it shows first (default: the deepest layer with a
    2-D grid and a local field, its centre unit, all channels); ``analysis`` reuses one made by
    ``rflens.analyze`` at the same size.  Needs anywidget (``pip install 'rflens[notebook]'``).

    >>> import torchvision
    >>> view = widget(torchvision.models.vgg16(weights=None), layer="features.29", unit=(7, 7))
    >>> view.field.box
    ((22, 218), (22, 218))
    """
    scene = Scene(model, input_size, image=image, name=name, analysis=analysis)
    return Widget(scene, layer, unit, channel)
