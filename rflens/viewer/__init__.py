"""An interactive viewer: click a unit, see what it sees.

Two ways to look at one model (``Scene``): ``serve`` starts a local web server (loopback only
unless told otherwise) whose page asks it for exact masks, projective fields and, where the
model has weights, gradient RFs and ERFs; ``export_html`` writes one self-contained page that
computes exact masks and projective fields itself from the engine's geometry, offline.

The stack is the standard library's ``http.server`` and a plain JavaScript page drawing on
canvases: no web framework, no build step, no CDN, nothing to keep up to date.

>>> import torchvision, tempfile, os
>>> scene = Scene(torchvision.models.vgg16(), (3, 224, 224), name="vgg16")
>>> path = export_html(scene, os.path.join(tempfile.mkdtemp(), "vgg16.html"))
>>> path.read_text().count("<script")
2
"""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from .scene import Scene, decode_mask, encode_mask
from .server import ViewerServer, asset, check_port, serve

__all__ = ["Scene", "ViewerServer", "check_port", "decode_mask", "encode_mask", "export_html", "serve"]


def export_html(scene: Scene, path: str | Path) -> Path:
    """Write the viewer as one static HTML file (script, style, picture and geometry inlined);
    it works from ``file://`` with no server.  Gradient RFs and ERFs need the server."""
    page = asset("index.html").decode()
    data = dict(scene.meta(), gradients=False, geometry=scene.geometry())
    if scene.picture is not None:
        data["image_data"] = scene.image_data_url()
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    script = asset("view.js", "page.js").decode().replace("</script", "<\\/script")
    for old, new in [('<link rel="stylesheet" href="static/viewer.css">', f"<style>\n{asset('viewer.css').decode()}</style>"),
                     ('<script src="static/viewer.js"></script>',
                      f'<script type="application/json" id="rflens-data">{blob}</script>\n<script>\n{script}</script>')]:
        if old not in page:
            raise RuntimeError(f"index.html lost its placeholder {old!r}")
        page = page.replace(old, new)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
