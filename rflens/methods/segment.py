"""What a channel responds to on its top images: segmentations as in Zhou et al. (2015) and
NetDissect (Bau et al., CVPR 2017).

* ``"netdissect"``: the channel's activation map brought to the image by interpolating between
  the exact RF centres of its units (so a unit's value sits where it looks, not where a plain
  resize would put it), thresholded at the level the channel's top 0.5% of activations over
  the whole scan reach;
* ``"occlusion"``: the channel's discrepancy map (``empirical_field``) thresholded at half its
  maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..deprecation import renamed
from ..errors import RFLensError
from ..engine.field import Layer
from .occlusion import Occluder, _Lookup, empirical_field, scanned_inputs
from .progress import ProgressLike, reporting
from .running import InputsLike, model_dtype, pick_device, prepared
from .scan import TOP_FRACTION, Scan, TopImage, channel_layer
from ..engine.trace import capture, fx_graph

METHODS = ("netdissect", "occlusion")
OCCLUSION_LEVEL = 0.5  # fraction of a discrepancy map's maximum that counts as "responds"


@dataclass(frozen=True)
class Segment:
    """One top image of a channel: ``picture`` (H, W, 3) in [0, 1] for display, ``response``
    (H, W) the map that was thresholded, ``mask`` where it reaches ``level``."""

    image: TopImage
    picture: np.ndarray
    response: np.ndarray
    mask: np.ndarray
    level: float
    method: str


def rf_upsample(values: np.ndarray, layer: Layer) -> np.ndarray:
    """A layer's (h, w) map at input resolution: bilinear between the exact RF centres of its
    units, held constant beyond the outermost centres (NetDissect's RF-anchored upsampling).

    >>> import torch, rflens, numpy as np
    >>> layer = rflens.analyze(torch.nn.Conv2d(1, 1, 3, stride=2), (1, 9, 9))["output"]
    >>> [layer.unit((i, 0)).center[0] for i in range(4)]
    [1, 3, 5, 7]
    >>> rf_upsample(np.arange(4.0)[:, None].repeat(4, 1), layer)[:, 0].tolist()
    [0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]
    """
    h, w = values.shape
    if (h, w) != tuple(layer.grid_shape):
        raise ValueError(f"values of shape {(h, w)} are not the grid {tuple(layer.grid_shape)} of '{layer.name}'")
    rows = np.array([layer.unit((i, 0)).center[0] for i in range(h)], float)
    cols = np.array([layer.unit((0, j)).center[1] for j in range(w)], float)
    height, width = layer.analysis.spatial
    across = np.stack([np.interp(np.arange(width), cols, r) for r in values])  # (h, width)
    return np.stack([np.interp(np.arange(height), rows, across[:, x]) for x in range(width)], axis=1)


@renamed(images="inputs")
def segment(model: nn.Module, layer: str, channel: int, inputs: InputsLike | Scan | None = None, *,
            scan: Scan | None = None, k: int = 10, method: str = "netdissect", occluder: Occluder | None = None,
            input_size=None, normalize=None, device=None, progress: ProgressLike = None) -> list[Segment]:
    """Segmentations of ``channel``'s top ``k`` images (see the module docstring).

    ``inputs``/``scan`` as for ``empirical_field``.  The NetDissect threshold needs the whole
    scan, so pass the scan of the full image set.  ``progress`` as for ``empirical_field``: the
    scan where one is made here, then each top image.

    >>> import torch, rflens
    >>> net = torch.nn.Conv2d(1, 2, 3)
    >>> segments = rflens.segment(net, "output", 0, torch.rand(6, 1, 8, 8), k=2, device="cpu")
    >>> len(segments), segments[0].mask.shape
    (2, (8, 8))
    """
    if method not in METHODS:
        raise RFLensError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    scan, lookup = scanned_inputs(model, layer, inputs, scan, k, input_size, normalize, device, progress)
    tops = scan.top(channel)[:k]
    target = channel_layer(model, layer, lookup.size)
    if method == "occlusion":
        found = empirical_field(model, layer, [channel], None if isinstance(inputs, Scan) else inputs,
                                scan=scan, k=k, occluder=occluder, input_size=input_size, normalize=normalize,
                                device=device, progress=progress)
        out = []
        for m in found.fields[channel].maps:
            heat = np.abs(m.heat)
            level = OCCLUSION_LEVEL * float(heat.max())
            out.append(Segment(m.image, _picture(lookup, m.image.index), heat,
                               heat >= level if level > 0 else np.zeros_like(heat, bool), level, method))
        return out
    level = scan.threshold(channel, TOP_FRACTION)
    dev = pick_device(device)
    graph = fx_graph(model)
    out = []
    with prepared(model, dev), torch.no_grad(), reporting(progress, f"segmenting channel {channel}", "image") as report:
        for done, t in enumerate(tops):
            x = lookup.get(t.index)
            a = capture(model, x[None].to(dev, model_dtype(model)), target.name, graph)[0, channel]
            response = rf_upsample(a.double().cpu().numpy(), target)
            out.append(Segment(t, _picture(lookup, t.index), response, response >= level, level, method))
            if report is not None:
                report(done + 1, len(tops))
    return out


def _picture(lookup: _Lookup, index: int) -> np.ndarray:
    """The input as an RGB picture in [0, 1]: the file itself, or the tensor stretched to [0, 1]
    (its normalisation is the caller's, so it cannot be undone exactly)."""
    if lookup.paths is not None:
        from .images import load_image
        return load_image(lookup.paths[index], lookup.size[1:]).pixels
    x = lookup.get(index).double().cpu().numpy()
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    pixels = x.transpose(1, 2, 0)
    return np.repeat(pixels, 3, axis=2) if x.shape[0] == 1 else pixels[..., :3]
