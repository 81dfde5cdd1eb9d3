"""The viewer in a real browser (headless Chromium driven by Playwright): what the page draws
is checked pixel by pixel against the engine, in server mode and in the exported static page."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from viewing import CHROMIUM, NO_CHROMIUM, astronaut, chromium, running, scene

from rflens.methods.gradient import gradient_field
from rflens.viewer import export_html

pytest.importorskip("playwright.sync_api", reason="the browser tests need Playwright (pip install -e '.[view]')")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)]
MAGENTA, ORANGE = (255, 0, 255), (255, 165, 0)


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture(scope="module")
def vgg16(tmp_path_factory):
    """VGG-16 with random weights (seed 0) on scikit-image's astronaut, served."""
    s = scene("vgg16", image=astronaut(tmp_path_factory.mktemp("photo")), weights=True)
    with running(s) as url:
        yield s, url


@pytest.fixture(scope="module")
def resnet50_page(tmp_path_factory):
    """ResNet-50 on the blank input, exported as a static page."""
    s = scene("resnet50")
    path = export_html(s, tmp_path_factory.mktemp("html") / "resnet50.html")
    return s, path.as_uri()


@pytest.fixture(scope="module")
def densenet(tmp_path_factory):
    """DenseNet-121 at 3x64x64 (its first block's output: seven fields by channel), served and
    exported as a static page."""
    s = scene("densenet121", size=64)
    path = export_html(s, tmp_path_factory.mktemp("html") / "densenet121.html")
    with running(s) as url:
        yield s, url, path


def shot(pg, selector: str) -> np.ndarray:
    """A screenshot of one canvas: its own pixels, one to one."""
    pixels = np.asarray(Image.open(io.BytesIO(pg.locator(selector).screenshot())).convert("RGB"))
    assert pixels.shape[:2] == tuple(pg.eval_on_selector(selector, "c => [c.height, c.width]"))
    return pixels


def drawn_box(pg) -> tuple[tuple[int, int], tuple[int, int]]:
    """The magenta outline's extent on the input canvas, in input pixels (half-open)."""
    pixels = shot(pg, "#image")
    scale = int(pg.get_attribute("#image", "data-scale"))
    ys, xs = np.nonzero((pixels == MAGENTA).all(axis=2))
    assert ys.size, "no box drawn"
    return ((ys.min() / scale, (ys.max() + 1) / scale), (xs.min() / scale, (xs.max() + 1) / scale))


def highlighted(pg, grid: tuple[int, int]) -> np.ndarray:
    """Which cells of the layer grid are painted orange, read at each cell's centre."""
    pixels = shot(pg, "#grid")
    cell = int(pg.get_attribute("#grid", "data-cell"))
    rows, cols = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centre = pixels[rows * cell + cell // 2, cols * cell + cell // 2]
    return (centre == ORANGE).all(axis=-1)


def click_unit(pg, unit: tuple[int, int]) -> None:
    cell = int(pg.get_attribute("#grid", "data-cell"))
    pg.click("#grid", position={"x": unit[1] * cell + cell / 2, "y": unit[0] * cell + cell / 2})
    pg.wait_for_selector(f'#numbers[data-unit="{unit[0]},{unit[1]}"]')


def click_pixel(pg, layer: str, pixel: tuple[int, int]) -> None:
    scale = int(pg.get_attribute("#image", "data-scale"))
    pg.click("#image", position={"x": pixel[1] * scale + scale / 2, "y": pixel[0] * scale + scale / 2})
    pg.wait_for_selector(f'#grid[data-pf^="{layer}|{pixel[0]},{pixel[1]}|"]')


def open_page(pg, url: str, layer: str) -> None:
    pg.goto(f"{url}#layer={layer}")
    pg.wait_for_selector("body[data-ready]")
    pg.wait_for_selector(f'#numbers[data-layer="{layer}"][data-unit]')


def test_server_page_draws_the_clicked_units_exact_box_and_mask(page, vgg16):
    s, url = vgg16
    open_page(page, url, "features.16")
    click_unit(page, (3, 20))
    unit = s.analysis["features.16"].unit((3, 20))
    assert unit.box == ((6, 50), (142, 186)) and drawn_box(page) == unit.box
    shown = page.evaluate("Array.from(window.rflensView.state.shown.mask)")
    assert np.array_equal(np.asarray(shown, bool).reshape(224, 224), unit.mask)
    assert page.evaluate("location.hash") == "#layer=features.16&unit=3,20"
    assert "[6, 50) x [142, 186)" in page.inner_text("#numbers")


def test_server_page_highlights_the_units_that_see_a_clicked_pixel(page, vgg16):
    s, url = vgg16
    open_page(page, url, "features.16")
    click_pixel(page, "features.16", (100, 120))
    expected = s.analysis["features.16"].projective_field((100, 120))
    assert expected.sum() == 30 and np.array_equal(highlighted(page, (28, 28)), expected)
    assert "pixel=100,120" in page.evaluate("location.hash")


def test_server_page_gradient_heat_map_and_erf_cancellation(page, vgg16):
    s, url = vgg16
    open_page(page, url, "features.9")
    click_unit(page, (20, 30))
    before = shot(page, "#image")
    page.check("#grad")
    page.wait_for_selector('#heat[data-state="done"][data-shown]', timeout=120_000)
    from rflens.methods.images import to_tensor
    g = gradient_field(s.model, "features.9", (20, 30), input=to_tensor(s.picture), device="cpu")
    after = shot(page, "#image")
    heat = np.kron(g.nonzero, np.ones((2, 2), bool))  # drawn where the gradient is not 0, under the box
    box = (after == MAGENTA).all(axis=2)
    assert g.nonzero.sum() == 256 and np.array_equal((after != before).any(axis=2), heat & ~box)
    assert f"{int(g.nonzero.sum())} of 256 support pixels nonzero" in page.inner_text("#heatinfo")
    # over the heat map the field is outlined, not filled: the fill hid the heat
    assert page.get_attribute("#image", "data-mask") == "outline"
    page.fill("#erfn", "512")
    page.check("#erf")
    assert not page.is_checked("#grad")
    page.wait_for_selector("#jobline:not([hidden])", timeout=30_000)
    job = page.evaluate("window.rflensView.state.job.id")
    page.click("#cancel")
    page.wait_for_selector('#heat[data-state="cancelled"]')
    state = page.evaluate(f"""async () => {{
        for (let i = 0; i < 600; i++) {{
            const j = await (await fetch("api/job?id={job}")).json();
            if (j.state !== "running" && j.state !== "queued") return j;
            await new Promise((r) => setTimeout(r, 100));
        }} }}""")
    assert state["state"] == "cancelled" and state["done"] < 512


def test_static_page_keys_move_the_unit_and_the_layer_and_the_address_keeps_them(page, resnet50_page):
    s, url = resnet50_page
    page.goto(f"{url}#layer=layer2.0.add&unit=5,6")
    page.wait_for_selector('#numbers[data-layer="layer2.0.add"][data-unit="5,6"]')
    assert drawn_box(page) == s.analysis["layer2.0.add"].unit((5, 6)).box == ((19, 62), (27, 70))
    page.keyboard.press("ArrowRight")
    page.wait_for_selector('#numbers[data-unit="5,7"]')
    assert drawn_box(page) == s.analysis["layer2.0.add"].unit((5, 7)).box
    page.keyboard.press("]")
    after = s.analysis.layers[s.analysis.layers.index("layer2.0.add") + 1]
    page.wait_for_selector(f'#numbers[data-layer="{after}"][data-unit="5,7"]')
    page.reload()
    page.wait_for_selector(f'#numbers[data-layer="{after}"][data-unit="5,7"]')
    assert drawn_box(page) == s.analysis[after].unit((5, 7)).box
    click_pixel(page, after, (0, 223))
    assert np.array_equal(highlighted(page, (28, 28)), s.analysis[after].projective_field((0, 223)))


def test_static_page_search_picks_a_layer(page, resnet50_page):
    s, url = resnet50_page
    open_page(page, url, "layer1")
    page.keyboard.press("/")
    page.keyboard.type("layer4.2.co")
    visible = page.eval_on_selector_all("#table tbody tr:not([hidden])", "rows => rows.map(r => r.dataset.name)")
    assert visible == ["layer4.2.conv1", "layer4.2.conv2", "layer4.2.conv3"]
    page.keyboard.press("Enter")
    page.wait_for_selector('#numbers[data-layer="layer4.2.conv1"]')
    click_unit(page, (6, 6))
    assert drawn_box(page) == s.analysis["layer4.2.conv1"].unit((6, 6)).box


RLE = """([layer, units, pixels, channel]) => Promise.all([
    ...units.map((u) => window.rflensView.source.unit(layer, u, channel).then((r) => {
        const runs = []; let v = 0, n = 0;
        for (const b of r.mask) { if (b === v) n++; else { runs.push(n); v = b; n = 1; } }
        runs.push(n);
        return {runs, box: r.box, unclipped: r.unclipped_box, support: r.support_size}; })),
    ...pixels.map((p) => window.rflensView.source.projective(layer, p, channel).then((m) => Array.from(m)))])"""


def _runs(mask: np.ndarray) -> list[int]:
    flat = mask.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size]))).tolist()
    return [0, *runs] if flat[0] else runs


def _corners(grid) -> list[tuple[int, ...]]:
    return sorted({tuple((n - 1) * c for n, c in zip(grid, corner)) for corner in np.ndindex(*(2,) * len(grid))}
                  | {tuple(n // 2 for n in grid)})


def _check_static_geometry(page, s, path, by_channel: bool = False) -> None:
    """Every layer's corner and centre units and two pixels' projective fields, as the page
    computes them, equal the engine's; ``by_channel``: also for the first channel of each of a
    layer's channel groups."""
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready]")
    pixels = [(0, 0), (s.input_size[1] // 2, s.input_size[2] - 1)]
    for name in s.analysis.layers:
        whole = s.analysis[name]
        channels = [None] + ([g.channels.start for g in whole.channel_groups] if by_channel and whole.varies_by_channel else [])
        for c in channels:
            L, units, which = whole.for_channel(c), _corners(whole.grid_shape), f"{name} channel {c}"
            got = page.evaluate(RLE, [name, [list(u) for u in units], [list(p) for p in pixels], c])
            for u, g in zip(units, got):
                e = L.unit(u)
                assert g["runs"] == _runs(e.mask), f"{which} unit {u}: mask"
                assert tuple(map(tuple, g["box"])) == e.box and g["support"] == e.support_size, f"{which} unit {u}"
                assert tuple(map(tuple, g["unclipped"])) == e.unclipped_box, f"{which} unit {u}: unclipped box"
            for p, g in zip(pixels, got[len(units):]):
                assert np.array_equal(np.asarray(g, bool), L.projective_field(p).reshape(-1)), f"{which} pixel {p}"


def test_static_page_computes_the_engines_fields_for_every_layer_of_resnet50(page, resnet50_page, tmp_path):
    s, _ = resnet50_page
    _check_static_geometry(page, s, export_html(s, tmp_path / "r.html"))


def test_static_page_is_exact_through_holes_token_grids_and_global_layers(page, tmp_path):
    """Dilations and strided 1x1 convolutions leave holes; ViT's layers have 1-D token grids
    that read other nodes' positions, and attention makes them global."""
    from rflens.models import load_model
    from rflens.viewer import Scene
    holes = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, dilation=3), torch.nn.Conv2d(4, 4, 1, stride=2),
                                torch.nn.Conv2d(4, 4, 3, dilation=2, padding=3), torch.nn.MaxPool2d(2, ceil_mode=True))
    s = Scene(holes, (3, 41, 37), name="holes")
    _check_static_geometry(page, s, export_html(s, tmp_path / "holes.html"))
    vit = Scene(load_model("vit_b_16"), (3, 224, 224), name="vit_b_16")
    _check_static_geometry(page, vit, export_html(vit, tmp_path / "vit.html"))


def _pick_channel(pg, channel: int) -> None:
    pg.fill("#channel", str(channel))
    pg.keyboard.press("Enter")  # leaves the box, so the keys move again
    pg.wait_for_selector(f'#numbers[data-channel="{channel}"]')


@pytest.mark.parametrize("where", ["server", "static"])
def test_channel_selector_draws_one_neurons_field_on_a_densenet_block(page, densenet, where):
    s, url, path = densenet
    block = s.analysis["features.denseblock1"]
    open_page(page, url if where == "server" else path.as_uri(), "features.denseblock1")
    row = page.locator('#table tr[data-name="features.denseblock1"]')
    assert row.inner_text().endswith("\tby channel 11–59")  # its paths are its channels: said once
    assert page.eval_on_selector_all("#groups button", "bs => bs.map(b => b.textContent)") == [
        "all", "0-63: RF 11", "64-95: RF 19", "96-127: RF 27", "128-159: RF 35", "160-191: RF 43", "192-223: RF 51",
        "224-255: RF 59"]
    click_unit(page, (8, 8))
    assert drawn_box(page) == block.unit((8, 8)).box == ((3, 62), (3, 62))

    _pick_channel(page, 70)
    assert drawn_box(page) == block.unit((8, 8), channel=70).box == ((23, 42), (23, 42))
    shown = page.evaluate("Array.from(window.rflensView.state.shown.mask)")
    assert np.array_equal(np.asarray(shown, bool).reshape(64, 64), block.unit((8, 8), channel=70).mask)
    assert page.evaluate("location.hash") == "#layer=features.denseblock1&unit=8,8&channel=70"
    assert "70 of 256: RF 19, stride 4, start -9 (group 64-95)" in page.inner_text("#numbers")
    click_pixel(page, "features.denseblock1", (30, 30))
    page.wait_for_selector('#grid[data-pf$="|70"]')
    assert np.array_equal(highlighted(page, (16, 16)), block.for_channel(70).projective_field((30, 30)))

    page.click('#groups button[data-channel="224"]')            # a group: its first channel
    page.wait_for_selector('#numbers[data-channel="224"]')
    assert drawn_box(page) == block.unit((8, 8), channel=224).box
    page.keyboard.press(",")                                      # the previous channel: another group
    page.wait_for_selector('#numbers[data-channel="223"]')
    page.wait_for_selector('#grid[data-pf$="|223"]')
    assert drawn_box(page) == block.unit((8, 8), channel=223).box == ((7, 58), (7, 58))
    assert np.array_equal(highlighted(page, (16, 16)), block.for_channel(223).projective_field((30, 30)))
    page.reload()                                                 # the address keeps the channel
    page.wait_for_selector('#numbers[data-channel="223"][data-unit="8,8"]')
    page.click('#groups button[data-channel="all"]')
    page.wait_for_selector('#numbers[data-channel=""]')
    assert drawn_box(page) == ((3, 62), (3, 62)) and "channel" not in page.evaluate("location.hash")


def test_static_page_computes_every_channel_groups_fields_for_every_layer_of_densenet(page, densenet):
    s, _, path = densenet
    _check_static_geometry(page, s, path, by_channel=True)


def _table(pg) -> dict[str, list[str]]:
    rows = pg.eval_on_selector_all("#table tbody tr", "rows => rows.map(r => [r.dataset.name, r.className, "
                                   "...Array.from(r.cells).map(c => c.textContent)])")
    return {name: [cls, *cells] for name, cls, *cells in rows}


def test_table_says_what_sets_a_layer_apart_global_paths_channels_and_refusals(page, resnet50_page, tmp_path):
    """Issue 17: the flags column said "paths" on nearly every ResNet row; now the RF column says
    "global" for a global layer (its stride that of the local field) and the last column gives the
    numbers that differ: the local RF, the range over paths, the range over channels, a refusal."""
    s, url = resnet50_page
    open_page(page, url, "layer1")
    rows = _table(page)
    assert rows["layer4"][1:] == ["layer4", "Sequential", "7x7", "427", "32", "paths 11–427"]
    assert rows["avgpool"][1:] == ["avgpool", "AdaptiveAvgPool2d", "1x1", "global", "32", "local RF 427"]
    assert rows["conv1"][1:] == ["conv1", "Conv2d", "112x112", "7", "2", ""]

    from rflens.viewer import Scene

    class Top(torch.nn.Module):  # a value-selected op: the layers after it have no field
        def forward(self, x):
            return x + x.flatten(2).topk(1).values.unsqueeze(-1)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), Top(), torch.nn.Conv2d(2, 2, 3))
    scene = Scene(net, (3, 16, 16), name="top")
    open_page(page, export_html(scene, tmp_path / "top.html").as_uri(), "0")
    rows = _table(page)
    assert list(rows) == scene.analysis.layers  # in the model's order, the refused ones too
    assert rows["1"] == ["refused", "1", "Top", "", "", "", "refused: topk in 1"]
    assert rows["2"][0] == "refused" and rows["1.flatten"][0] == ""
    assert rows["0"][1:] == ["0", "Conv2d", "14x14", "3", "1", ""]
