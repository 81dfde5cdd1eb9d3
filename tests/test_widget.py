"""The notebook widget: its Python side against the analysis, and the real thing: docs/widget.ipynb
run by a JupyterLab server in headless Chromium, a unit clicked on the widget's canvas, the drawn
field read back and checked against the engine, and the click seen by the kernel."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from viewing import CHROMIUM, NO_CHROMIUM, chromium

import rflens
from rflens.errors import LayerNotFoundError, UnitError
from rflens.models import load_model
from rflens.viewer import decode_mask

pytest.importorskip("anywidget", reason="the notebook widget needs anywidget (pip install -e '.[notebook]')")
ROOT = Path(__file__).resolve().parent.parent
MAGENTA = (255, 0, 255)


@pytest.fixture(scope="module")
def view():
    """ResNet-18 (meta weights) at 3x224x224, opened on layer3."""
    return rflens.widget(load_model("resnet18"), (3, 224, 224), layer="layer3", name="resnet18")


def test_the_widget_shows_what_the_analysis_says_for_the_selected_unit(view):
    expected = rflens.analyze(load_model("resnet18"), (3, 224, 224))["layer3"]
    assert (view.layer, view.unit, view.channel) == ("layer3", [7, 7], None)  # the centre unit of 14x14
    field = view.select("layer3", (2, 11))
    assert (view.layer, view.unit) == ("layer3", [2, 11])
    assert field.box == view.field.box == expected.unit((2, 11)).box == ((0, 138), (71, 224))
    assert field.unclipped_box == ((-73, 138), (71, 282))
    assert np.array_equal(view.field.mask, expected.unit((2, 11)).mask)
    view.select("layer3", (2, 11), channel=5)
    assert view.channel == view.field.channel == 5 and view.field.box == expected.unit((2, 11), channel=5).box


def test_the_kernel_answers_the_views_questions_as_the_server_does(view):
    """What the page would draw for a unit and for a clicked pixel: the engine's mask and units."""
    L = view.analysis["layer2"]
    answer = view._ask({"id": 1, "what": "unit", "layer": "layer2", "unit": [3, 25], "channel": None})
    assert answer["box"] == [[0, 74], [151, 224]] and answer["unclipped_box"] == [[-25, 74], [151, 250]]
    assert np.array_equal(decode_mask(answer["mask"]), L.unit((3, 25)).mask)
    seen = view._ask({"id": 2, "what": "projective", "layer": "layer2", "pixel": [100, 120], "channel": None})
    assert seen["count"] == 156 and np.array_equal(decode_mask(seen["units"]), L.projective_field((100, 120)))
    with pytest.raises(UnitError, match=r"pixel \(300, 1\) is outside the 224x224 input"):
        view._ask({"what": "projective", "layer": "layer2", "pixel": [300, 1]})
    with pytest.raises(rflens.RFLensError, match="the widget answers what='unit'"):
        view._ask({"what": "heat", "layer": "layer2"})


def test_a_new_layer_keeps_the_unit_where_it_exists_else_shows_the_centre(view):
    view.select("layer2", (20, 3), channel=100)
    view.layer = "layer1"                       # 56x56, 64 channels: the unit exists, channel 100 does not
    assert (view.unit, view.channel) == ([20, 3], None)
    view.layer = "layer4"                       # 7x7: (20, 3) is off the grid
    assert view.unit == [3, 3] and view.field.box == ((0, 224), (0, 224))
    view.layer = "fc"                           # no grid: the one unit
    assert view.unit == [] and view.field.index == ()


def test_a_selection_that_does_not_exist_is_refused_and_nothing_changes(view):
    view.select("layer3", (1, 1))
    with pytest.raises(LayerNotFoundError, match="no layer named 'layer9'"):
        view.layer = "layer9"
    with pytest.raises(UnitError, match=r"\(14, 0\)"):
        view.unit = [14, 0]
    with pytest.raises(UnitError, match="channel 256 is outside layer 'layer3'"):
        view.select("layer3", (1, 1), channel=256)
    with pytest.raises(UnitError, match="outside the 224x224 input"):
        view.pixel = [0, 224]
    assert (view.layer, view.unit, view.channel, view.pixel) == ("layer3", [1, 1], None, None)


def test_import_rflens_loads_neither_anywidget_nor_the_viewer():
    out = subprocess.run([sys.executable, "-c", "import sys, rflens; print(sorted(m for m in sys.modules "
                          "if m.split('.')[0] in ('anywidget', 'ipywidgets') or m.startswith('rflens.viewer')))"],
                         capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "[]"


# -- the real notebook ----------------------------------------------------------------------------

def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "the browser tests need Playwright (pip install -e '.[view]')"
    if importlib.util.find_spec("jupyterlab") is None:
        return "the notebook test needs JupyterLab (pip install -e '.[notebook]')"
    return NO_CHROMIUM if CHROMIUM is None else None


@contextlib.contextmanager
def jupyterlab(folder: Path):
    """A JupyterLab server on a free loopback port, serving ``folder``, with a token and its own
    settings, data and runtime folders (nothing of the user's, no news fetched); yields its URL
    with the token.  Its kernel imports this checkout's rflens."""
    token = secrets.token_hex(16)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = folder / ".jupyter-home"
    settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false",
                                                                            "checkForUpdates": False}))
    kernel = home / "data" / "kernels" / "python3"  # this Python, whatever kernels the machine has
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                                                             "{connection_file}"],
                                                    "display_name": "Python 3", "language": "python"}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "lab-settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
               IPYTHONDIR=str(home / "ipython"), MPLBACKEND="Agg")
    log = open(home / "server.log", "w+")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
         "--ServerApp.terminals_enabled=False"] + (["--allow-root"] if os.geteuid() == 0 else []),  # CI runs as root
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if server.poll() is not None:
                break
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            time.sleep(0.1)
        else:
            server.poll()
        if server.returncode is not None:
            log.seek(0)
            pytest.fail(f"JupyterLab did not start:\n{log.read()[-3000:]}")
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


RUN = """async (code) => {  // a new cell at the end, run in the kernel: its outputs
    const app = window.jupyterapp, nb = app.shell.currentWidget.content, n = nb.model.cells.length;
    nb.model.sharedModel.insertCell(n, {cell_type: "code", source: code});
    nb.activeCellIndex = n;
    await app.commands.execute("notebook:run-cell");
    return nb.widgets[n].model.outputs.toJSON();
}"""


def _text(outputs: list[dict]) -> str:
    return "".join("".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("text", "")) for o in outputs)


def _drawn_box(widget) -> tuple[tuple[float, float], tuple[float, float]]:
    """The magenta outline's extent on the widget's input canvas, in input pixels (half-open)."""
    canvas = widget.locator("#image")
    pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
    scale = int(canvas.get_attribute("data-scale"))
    ys, xs = np.nonzero((pixels == MAGENTA).all(axis=2))
    assert ys.size, "no box drawn"
    return (ys.min() / scale, (ys.max() + 1) / scale), (xs.min() / scale, (xs.max() + 1) / scale)


@pytest.mark.browser
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_the_notebook_widget_draws_a_clicked_units_exact_field_in_jupyterlab(tmp_path):
    shutil.copy(ROOT / "docs" / "widget.ipynb", tmp_path / "widget.ipynb")
    analysis = rflens.analyze(load_model("resnet18"), (3, 224, 224))
    with jupyterlab(tmp_path) as (url, token), chromium() as browser:
        page = browser.new_page(viewport={"width": 1680, "height": 1100}, device_scale_factor=1)
        page.set_default_timeout(60_000)  # two busy cores: the kernel answers while other tests run
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/doc/tree/widget.ipynb?token={token}")
        page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget"
                               " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=60_000)
        page.evaluate("""async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            await panel.sessionContext.ready;
            await window.jupyterapp.commands.execute("notebook:run-all-cells");
        }""")
        widget = page.locator(".rflens.widget[data-ready]")
        widget.wait_for(timeout=120_000)
        widget.locator('#numbers[data-layer="layer3"][data-unit="7,7"]').wait_for()  # the kernel's first answer

        cell = int(widget.locator("#grid").get_attribute("data-cell"))
        widget.locator("#grid").click(position={"x": 11 * cell + cell / 2, "y": 2 * cell + cell / 2})
        widget.locator('#numbers[data-unit="2,11"]').wait_for()
        unit = analysis["layer3"].unit((2, 11))
        assert unit.box == ((0, 138), (71, 224)) and _drawn_box(widget) == unit.box
        shown = widget.evaluate("el => Array.from(el.rflensView.state.shown.mask)")
        assert np.array_equal(np.asarray(shown, bool).reshape(224, 224), unit.mask)
        assert "[0, 138) x [71, 224)" in widget.locator("#numbers").inner_text()

        # the click is the kernel's state, and the kernel's selection moves the view
        assert _text(page.evaluate(RUN, "view.layer, view.unit, view.field.box")) == \
            "('layer3', [2, 11], ((0, 138), (71, 224)))"
        page.evaluate(RUN, 'view.select("layer2", (5, 9))')
        widget.locator('#numbers[data-layer="layer2"][data-unit="5,9"]').wait_for()
        assert _drawn_box(widget) == analysis["layer2"].unit((5, 9)).box == ((0, 90), (23, 122))
        if os.environ.get("RFLENS_WIDGET_SHOT"):  # the gallery's picture: docs/img/widget_notebook.png
            widget.locator("#image").click(position={"x": 2 * 150 + 1, "y": 2 * 120 + 1})  # and a pixel's units
            widget.locator('#grid[data-pf^="layer2|120,150|"]').wait_for()
            page.set_viewport_size({"width": 1680, "height": 1500})  # the whole cell: its code and the widget
            page.locator(".jp-CodeCell", has=widget).screenshot(path=os.environ["RFLENS_WIDGET_SHOT"])
    assert not errors, f"errors in the page: {errors}"
