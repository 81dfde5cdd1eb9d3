"""Shared by the viewer's tests: scenes of real architectures, a server running in a thread, and
headless Chromium (Debian's, driven by Playwright) for the page's and the notebook widget's tests."""

from __future__ import annotations

import contextlib
import os
import shutil
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


CHROMIUM = os.environ.get("RFLENS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = "the browser tests need Chromium (Debian's chromium package: make setup installs it where apt-get runs as root)"


@contextlib.contextmanager
def chromium():
    """Headless Chromium (``CHROMIUM``) under Playwright, which downloads no browser of its own."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()
