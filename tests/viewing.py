"""Shared by the viewer's tests: scenes of real architectures and a server running in a thread."""

from __future__ import annotations

import contextlib
import threading

import torch
import torchvision
from PIL import Image

from rflens.models import load_model
from rflens.viewer import Scene, serve


def astronaut(folder) -> str:
    """scikit-image's astronaut (a 512x512 RGB photograph) as a PNG file."""
    from skimage import data
    path = folder / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return str(path)


def scene(name: str, image=None, weights: bool = False, size: int = 224) -> Scene:
    """A torchvision architecture at 3 x size x size: on the meta device, or with random weights
    drawn from seed 0 (for gradients)."""
    if weights:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)().eval()
    else:
        model = load_model(name)
    return Scene(model, (3, size, size), image=image, name=name)


@contextlib.contextmanager
def running(s: Scene):
    """The viewer server of ``s`` on a free loopback port; yields its URL."""
    server = serve(s, port=0, device="cpu")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
