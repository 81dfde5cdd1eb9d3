"""The viewer's server and static page, without a browser: the JSON answers equal the engine's,
bad requests get a 400 with a message, nothing outside the viewer is served."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

import numpy as np
import pytest
from PIL import Image
from viewing import astronaut, running, scene

from rflens.cli import main
from rflens.errors import RFLensError
from rflens.viewer import decode_mask, encode_mask, export_html, serve


def request(url: str, path: str, method: str = "GET", host: str | None = None):
    """(status, content type, body) for a raw request: the path goes out exactly as written."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or parts.netloc)
    conn.endheaders()
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, r.getheader("Content-Type"), body


def get_json(url: str, path: str, method: str = "GET"):
    status, kind, body = request(url, path, method)
    assert kind == "application/json"
    return status, json.loads(body)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    return astronaut(tmp_path_factory.mktemp("photo"))


@pytest.fixture(scope="module")
def vgg16_url(photo):
    with running(scene("vgg16", image=photo)) as url:
        yield url


@pytest.fixture(scope="module")
def resnet50_scene():
    return scene("resnet50")


@pytest.fixture(scope="module")
def densenet_scene():
    """DenseNet-121 at 3x64x64: a block's output concatenates channels with seven fields."""
    return scene("densenet121", size=64)


@pytest.fixture(scope="module")
def densenet_url(densenet_scene):
    with running(densenet_scene) as url:
        yield url


@pytest.fixture(scope="module")
def resnet50_url(resnet50_scene):
    with running(resnet50_scene) as url:
        yield url


def test_unit_answers_are_the_engines_exact_fields(vgg16_url, resnet50_url, resnet50_scene):
    status, vgg = get_json(vgg16_url, "/api/unit?layer=features.29&unit=7,7")
    assert status == 200 and vgg["box"] == [[22, 218], [22, 218]] and vgg["center"] == [119.5, 119.5]
    assert vgg["support_size"] == 196 * 196 and decode_mask(vgg["mask"]).sum() == 196 * 196
    status, res = get_json(resnet50_url, "/api/unit?layer=layer3.1.add&unit=3,4")
    assert status == 200
    assert res["box"] == [[0, 118], [0, 134]] and res["unclipped_box"] == [[-21, 118], [-5, 134]]
    engine = resnet50_scene.analysis["layer3.1.add"].unit((3, 4))
    assert np.array_equal(decode_mask(res["mask"]), engine.mask) and res["support_size"] == 15812


@pytest.mark.parametrize("which,layer,pixel", [("vgg16", "features.16", (100, 120)),
                                              ("resnet50", "layer2.0.add", (0, 223))])
def test_projective_answer_is_every_unit_whose_mask_holds_the_pixel(which, layer, pixel, vgg16_url,
                                                                     resnet50_url, resnet50_scene):
    url = vgg16_url if which == "vgg16" else resnet50_url
    status, got = get_json(url, f"/api/projective?layer={layer}&pixel={pixel[0]},{pixel[1]}")
    assert status == 200
    a = resnet50_scene.analysis if which == "resnet50" else scene("vgg16").analysis
    L = a[layer]
    brute = np.zeros(L.grid_shape, bool)
    for u in np.ndindex(*L.grid_shape):
        brute[u] = L.unit(u).mask[pixel]
    assert np.array_equal(decode_mask(got["units"]), brute) and got["count"] == brute.sum()
    assert got["count"] == {"vgg16": 30, "resnet50": 6}[which]


def test_a_channel_answers_with_that_neurons_field(densenet_url, densenet_scene):
    block = densenet_scene.analysis["features.denseblock1"]
    status, one = get_json(densenet_url, "/api/unit?layer=features.denseblock1&unit=8,8&channel=70")
    assert status == 200 and one["channel"] == 70 and one["box"] == [[23, 42], [23, 42]]
    assert one["support_size"] == 19 * 19 and np.array_equal(decode_mask(one["mask"]), block.unit((8, 8), channel=70).mask)
    status, union = get_json(densenet_url, "/api/unit?layer=features.denseblock1&unit=8,8")
    assert union["channel"] is None and union["box"] == [[3, 62], [3, 62]]
    assert np.array_equal(decode_mask(union["mask"]), block.unit((8, 8)).mask)
    status, seen = get_json(densenet_url, "/api/projective?layer=features.denseblock1&pixel=30,30&channel=0")
    assert status == 200 and seen["channel"] == 0 and seen["count"] == 4
    assert np.array_equal(decode_mask(seen["units"]), block.for_channel(0).projective_field((30, 30)))
    assert get_json(densenet_url, "/api/projective?layer=features.denseblock1&pixel=30,30")[1]["count"] == 14 * 14


def test_meta_lists_channel_groups_where_the_field_varies_by_channel(densenet_url):
    _, meta = get_json(densenet_url, "/api/meta")
    by_name = {r["name"]: r for r in meta["layers"]}
    block = by_name["features.denseblock1"]
    assert block["channels"] == 256 and block["rf_size_by_channel"] == [[11, 11], [59, 59]]
    assert block["channel_groups"]["stop"] == [64, 96, 128, 160, 192, 224, 256]
    assert [r[0] for r in block["channel_groups"]["rf_size"]] == [11, 19, 27, 35, 43, 51, 59]
    conv = by_name["features.conv0"]
    assert conv["channels"] == 64 and conv["channel_groups"] is None and conv["rf_size_by_channel"] is None


def test_meta_lists_every_layer_with_its_grid_and_flags(vgg16_url, resnet50_url):
    _, vgg = get_json(vgg16_url, "/api/meta")
    assert vgg["model"] == "vgg16" and vgg["input_size"] == [3, 224, 224] and vgg["image"] == "astronaut.png"
    assert vgg["transform"] == "resized 512x512 -> 224x224 (bilinear)" and vgg["gradients"] is False
    assert len(vgg["layers"]) == 44
    by_name = {r["name"]: r for r in vgg["layers"]}
    assert by_name["features.29"]["grid"] == [14, 14] and by_name["features.29"]["rf_size"] == [196, 196]
    assert by_name["classifier.6"]["grid"] == [] and by_name["classifier.6"]["global"] is True
    _, res = get_json(resnet50_url, "/api/meta")
    assert res["image"] is None and len(res["layers"]) == 201


def test_the_picture_is_served_as_the_model_sees_it(vgg16_url, resnet50_url, photo):
    from rflens.methods.images import load_image
    status, kind, body = request(vgg16_url, "/image.png")
    assert status == 200 and kind == "image/png"
    served = np.asarray(Image.open(io.BytesIO(body)))
    assert served.shape == (224, 224, 3)
    assert np.array_equal(served, (load_image(photo, (224, 224)).pixels * 255).round().astype(np.uint8))
    status, body = get_json(resnet50_url, "/image.png")
    assert status == 404 and "no image" in body["error"]


@pytest.mark.parametrize("path,words", [
    ("/api/unit?layer=features.99&unit=1,1", "no layer named 'features.99'"),
    ("/api/unit?layer=features.29&unit=14,0", "outside layer 'features.29'"),
    ("/api/unit?layer=features.29&unit=7", "2-D grid"),
    ("/api/unit?layer=features.29&unit=a,b", "not a comma-separated list of integers"),
    ("/api/unit?layer=features.29&unit=-1,3", "outside layer"),
    ("/api/unit?layer=features.29&unit=99999999999,0", "out of range"),
    ("/api/unit?layer=features.29", "missing parameter(s): unit"),
    ("/api/unit?layer=features.29&unit=1,1&x=1", "unknown parameter(s): x"),
    ("/api/unit?layer=features.29&unit=1,1&unit=2,2", "given twice: unit"),
    ("/api/unit?layer=features.29&unit=1,1&&", "malformed query string"),
    ("/api/projective?layer=features.29&pixel=224,0", "outside the 224x224 input"),
    ("/api/projective?layer=features.29&pixel=1,2,3", "must have 2 integers"),
    ("/api/job?id=77", "no job '77'"),
    ("/api/heat.png?id=1", "no job '1'"),
    ("/api/meta?debug=1", "unknown parameter(s): debug"),
    ("/api/unit?layer=features.29&unit=1,1&channel=512", "channel 512 is outside layer 'features.29', which has "
                                                         "512 channels (0..511)"),
    ("/api/unit?layer=features.29&unit=1,1&channel=-1", "which has 512 channels (0..511)"),
    ("/api/unit?layer=features.29&unit=1,1&channel=x", "channel='x' is not a number"),
    ("/api/unit?layer=features.29&unit=1,1&channel=", "channel='' is not a number"),
    ("/api/unit?layer=features.29&unit=1,1&channel=1&channel=2", "given twice: channel"),
    ("/api/projective?layer=classifier.6&pixel=1,1&channel=1000", "which has 1000 channels (0..999)"),
])
def test_bad_parameters_get_400_and_one_message(vgg16_url, path, words):
    status, body = get_json(vgg16_url, path)
    assert status == 400 and words in body["error"] and "Traceback" not in body["error"]


def test_jobs_are_refused_without_weights_and_for_bad_kinds(vgg16_url):
    status, body = get_json(vgg16_url, "/api/job?kind=erf&layer=features.29&unit=7,7", "POST")
    assert status == 400 and "no weights" in body["error"]
    status, body = get_json(vgg16_url, "/api/job?kind=pickle&layer=features.29&unit=7,7", "POST")
    assert status == 400 and "use gradient or erf" in body["error"]


@pytest.mark.parametrize("path", ["/../../../../etc/passwd", "/static/../scene.py", "/static/%2e%2e/server.py",
                                  "/static/viewer.js/../../__init__.py", "//etc/passwd", "/static/",
                                  "/assets/viewer.js", "/static/viewer.js%00.py", "/image.png/../../etc/passwd",
                                  "/scene.py", "/static/..%2fscene.py"])
def test_nothing_outside_the_viewer_is_served(vgg16_url, path):
    status, kind, body = request(vgg16_url, path)
    assert status == 404 and kind == "application/json"
    assert b"root:" not in body and b"import" not in body


def test_assets_are_served_with_a_content_security_policy(vgg16_url):
    parts = urlsplit(vgg16_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    page = r.read().decode()
    assert r.status == 200 and "script-src 'self'" in r.getheader("Content-Security-Policy")
    assert r.getheader("X-Content-Type-Options") == "nosniff"
    assert '<script src="static/viewer.js"></script>' in page
    status, kind, _ = request(vgg16_url, "/static/viewer.js")
    assert status == 200 and kind.startswith("text/javascript")


def test_wrong_method_and_foreign_host_are_refused(vgg16_url):
    status, body = get_json(vgg16_url, "/api/unit?layer=features.29&unit=1,1", "POST")
    assert status == 405
    status, body = get_json(vgg16_url, "/api/job?kind=erf&layer=features.29&unit=1,1", "PUT")
    assert status == 501 and "Unsupported method ('PUT')" in body["error"]
    status, _, body = request(vgg16_url, "/api/meta", host="attacker.example:80")
    assert status == 403 and b"only requests to localhost" in body


@pytest.mark.parametrize("host", ["127.0.0.1.evil.com", "127.0.0.1.nip.io", "127.0.0.1:80@evil.com", "localhost.evil.com",
                                  "evil.com:8765", "[::1].evil.com", "127.0.0.1:abc", "127.0.0.1:99999", "127.1",
                                  "[127.0.0.1]", "[::ffff:127.0.0.1]", "10.0.0.2", "localhost.", ""])
def test_requests_to_any_other_host_than_a_loopback_one_are_refused(vgg16_url, host):
    """The DNS-rebinding guard: only a loopback IP literal or exactly localhost, with a numeric port."""
    status, _, body = request(vgg16_url, "/api/meta", host=host or " ")
    assert status == 403 and b"only requests to localhost" in body


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8765", "localhost", "LOCALHOST:80", "127.5.6.7:1", "[::1]",
                                  "[::1]:8765"])
def test_requests_to_loopback_names_are_answered(vgg16_url, host):
    status, _, _ = request(vgg16_url, "/api/meta", host=host)
    assert status == 200


def test_a_server_on_every_interface_answers_ip_addresses_and_its_own_names_only():
    import socket
    s = serve(scene("alexnet"), host="0.0.0.0", port=0)
    thread = threading.Thread(target=s.serve_forever)
    thread.start()
    try:
        url, port = f"http://127.0.0.1:{s.server_address[1]}/", s.server_address[1]
        assert not s.loopback
        for host in (f"192.168.1.20:{port}", "10.0.0.2", f"[fe80::1]:{port}", f"{socket.gethostname()}:{port}",
                     "localhost"):
            assert request(url, "/api/meta", host=host)[0] == 200, host
        for host in ("attacker.example", f"{socket.gethostname()}.evil.com", "192.168.1.20.nip.io"):
            status, _, body = request(url, "/api/meta", host=host)
            assert status == 403 and b"open it by its address" in body, host
    finally:
        s.shutdown()
        s.server_close()
        thread.join(5)


def test_server_binds_the_loopback_address_by_default():
    from rflens.viewer import serve
    server = serve(scene("vgg16"), port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.loopback
    finally:
        server.server_close()


def test_masks_travel_as_run_lengths_or_packed_bits_whichever_is_shorter(resnet50_scene):
    box = resnet50_scene.analysis["layer3.1.add"].unit((3, 4)).mask        # a filled box: few runs
    enc = encode_mask(box)
    assert "rle" in enc and len(enc["rle"]) == 2 * 118 + 1
    assert len(json.dumps(enc)) < len(json.dumps(box.tolist())) / 100
    holes = np.indices((224, 224)).sum(0) % 2 == 0                          # a checkerboard: packed bits
    enc = encode_mask(holes)
    assert "bits" in enc and len(base64.b64decode(enc["bits"])) == 224 * 224 // 8
    for mask in (box, holes, np.zeros((3, 5), bool), np.ones((7,), bool)):
        assert np.array_equal(decode_mask(encode_mask(mask)), mask)


def _static_data(path) -> dict:
    page = path.read_text()
    blob = re.search(r'<script type="application/json" id="rflens-data">(.*?)</script>', page, re.DOTALL).group(1)
    return json.loads(blob.replace("<\\/", "</"))


def _field_of(data: dict, layer: str, channel: int | None) -> dict:
    """The field a neuron of ``channel`` reads (None: all the channels), as the page finds it."""
    g = data["geometry"]["layers"][layer]
    if channel is None or g["channels"] is None:
        return data["geometry"]["fields"][g["field"]]
    stops = np.cumsum([count for _, count in g["channels"]])
    return data["geometry"]["fields"][g["channels"][int(np.searchsorted(stops, channel, side="right"))][0]]


def _mask_from_geometry(data: dict, layer: str, unit: tuple[int, ...], channel: int | None = None) -> np.ndarray:
    """What the page computes, in numpy: the union over the unit's node terms of outer products."""
    h, w = data["input_size"][1:]
    grid = next(r["grid"] for r in data["layers"] if r["name"] == layer)
    flat = int(np.ravel_multi_index(unit, grid)) if grid else 0
    mask = np.zeros((h, w), bool)
    for e in _field_of(data, layer, channel)["entries"]:
        n = int(np.prod(grid))
        if e["units"] is not None and not np.unpackbits(np.frombuffer(base64.b64decode(e["units"]), np.uint8))[flat]:
            continue
        pos = [unit[a] if p is None else int(np.frombuffer(base64.b64decode(p), "<i4")[flat]) for a, p in enumerate(e["pos"])]
        node = data["geometry"]["nodes"][e["node"]]
        for term in node["terms"]:
            rows = [np.unpackbits(np.frombuffer(base64.b64decode(t), np.uint8))[:g * s].reshape(g, s)[p].astype(bool)
                    for t, g, s, p in zip(term, node["grid"], (h, w), pos)]
            mask |= np.multiply.outer(*rows)
        assert n >= 1
    return mask


def test_html_export_is_one_self_contained_page(tmp_path, photo, resnet50_scene):
    path = export_html(scene("vgg16", image=photo), tmp_path / "vgg16.html")
    page = path.read_text()
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page), "every resource is inlined"
    assert "http://" not in page and "https://" not in page and "static/viewer" not in page
    data = _static_data(path)
    assert data["image_data"].startswith("data:image/png;base64,") and data["gradients"] is False
    assert np.array_equal(_mask_from_geometry(data, "features.29", (7, 7)),
                          scene("vgg16").analysis["features.29"].unit((7, 7)).mask)
    path = export_html(resnet50_scene, tmp_path / "resnet50.html")
    data = _static_data(path)
    assert "image_data" not in data and len(data["geometry"]["layers"]) == 201
    for layer, unit in [("layer3.1.add", (3, 4)), ("layer1.0.conv1", (0, 55)), ("fc", ()), ("layer4", (6, 0))]:
        assert np.array_equal(_mask_from_geometry(data, layer, unit), resnet50_scene.analysis[layer].unit(unit).mask)
    # every channel of a ResNet reads alike: no per-channel fields; layers that read alike share one
    assert all(g["channels"] is None for g in data["geometry"]["layers"].values())
    assert len(data["geometry"]["fields"]) == 40 and path.stat().st_size < 300_000  # 455 KB before sharing


def test_html_export_draws_any_channels_exact_field(tmp_path, densenet_scene):
    data = _static_data(export_html(densenet_scene, tmp_path / "densenet121.html"))
    a = densenet_scene.analysis
    block = a["features.denseblock1"]
    assert [count for _, count in data["geometry"]["layers"]["features.denseblock1"]["channels"]] == [64] + [32] * 6
    for c in range(block.channels):
        assert np.array_equal(_mask_from_geometry(data, "features.denseblock1", (8, 8), c),
                              block.unit((8, 8), channel=c).mask), f"channel {c}"
    varying = [n for n in a.layers if data["geometry"]["layers"][n]["channels"] is not None]
    assert len(varying) == 181 and "features.transition3.conv" not in varying
    for name in varying[::7]:
        L, first = a[name], 0
        for _, count in data["geometry"]["layers"][name]["channels"]:
            for c, unit in [(first, (0, 0)), (first + count - 1, tuple(n - 1 for n in L.grid_shape))]:
                assert np.array_equal(_mask_from_geometry(data, name, unit, c), L.unit(unit, channel=c).mask), \
                    f"{name} channel {c} unit {unit}"
            first += count


def test_html_export_into_a_missing_folder_fails_cleanly(tmp_path, resnet50_scene):
    with pytest.raises(RFLensError, match="does not exist"):
        export_html(resnet50_scene, tmp_path / "nowhere" / "r.html")
    assert not list(tmp_path.rglob("*.part"))


def test_cli_view_html_writes_the_page_and_prints_its_path(capsys, tmp_path):
    out = tmp_path / "resnet50.html"
    assert main(["view", "resnet50", "--html", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and _static_data(out)["model"] == "resnet50"


@pytest.mark.parametrize("argv,words", [
    (["--html", "x.txt"], "must end in .html"),
    (["--html", "x.html", "--port", "9000"], "leave out --port"),
    (["--input-size", "3x16x64x64", "--html", "x.html"], "the viewer draws 2-D inputs"),
    (["--image", "missing.png", "--html", "x.html"], "no image at 'missing.png'"),
])
def test_cli_view_refuses_bad_arguments_with_exit_2(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(["view", "vgg16", *argv]) == 2
    assert words in capsys.readouterr().err and not list(tmp_path.iterdir())


def _ctrl_c_delivered() -> None:
    # a shell without job control starts background jobs with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the server the Ctrl-C a terminal user has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_cli_view_serves_until_interrupted(tmp_path, photo):
    proc = subprocess.Popen([sys.executable, "-m", "rflens.cli", "view", "resnet18", "--input-size", "3x64x64",
                             "--image", photo, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_ctrl_c_delivered)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        status, meta = get_json(url, "/api/meta")
        assert status == 200 and meta["gradients"] is True and meta["weights"] == "random weights (torch seed 0)"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        assert code == 0, f"exit status {code}; stderr: {proc.stderr.read()[-6000:]}"


def test_gradient_and_erf_jobs_run_report_progress_and_cancel():
    s = scene("resnet18", weights=True)
    with running(s) as url:
        status, job = get_json(url, "/api/job?kind=gradient&layer=layer1&unit=5,9", "POST")
        assert status == 200 and job["state"] in ("queued", "running")
        job = _wait(url, job["id"])
        assert job["state"] == "done" and job["numbers"]["input"] == "zeros"
        # a 43x43 field whose top row lies in the padding; at zeros every ReLU sits at its kink
        assert job["numbers"]["nonzero"] == 0 and job["numbers"]["support"] == 42 * 43
        status, _, body = request(url, f"/api/heat.png?id={job['id']}")
        assert status == 200 and Image.open(io.BytesIO(body)).size == (224, 224)

        status, job = get_json(url, "/api/job?kind=erf&layer=layer1&unit=5,9&inputs=8", "POST")
        job = _wait(url, job["id"])
        assert job["state"] == "done" and job["done"] == job["total"] == 8 and job["numbers"]["inputs"] == 8

        status, job = get_json(url, "/api/job?kind=erf&layer=layer4&unit=3,3&inputs=512", "POST")
        time.sleep(0.5)
        status, cancelled = get_json(url, f"/api/job/cancel?id={job['id']}", "POST")
        assert status == 200 and cancelled["id"] == job["id"]
        job = _wait(url, job["id"])
        assert job["state"] == "cancelled" and job["done"] < 512
        status, body = get_json(url, f"/api/heat.png?id={job['id']}")
        assert status == 400 and "cancelled" in body["error"]


def test_gradient_and_erf_jobs_of_a_channel_use_that_neurons_field():
    """Channel 70 of DenseNet's first block is a 19x19 neuron; the union at (8, 8) spans 59x59."""
    s = scene("densenet121", weights=True, size=64)
    with running(s) as url:
        status, job = get_json(url, "/api/job?kind=gradient&layer=features.denseblock1&unit=8,8&channel=70", "POST")
        assert status == 200 and job["channel"] == 70
        job = _wait(url, job["id"])
        assert job["state"] == "done" and job["numbers"]["support"] == 19 * 19
        status, job = get_json(url, "/api/job?kind=erf&layer=features.denseblock1&unit=8,8&channel=70&inputs=2", "POST")
        job = _wait(url, job["id"])
        assert job["state"] == "done" and job["channel"] == 70 and job["numbers"]["inputs"] == 2
        status, body = get_json(url, "/api/job?kind=erf&layer=features.denseblock1&unit=8,8&channel=256", "POST")
        assert status == 400 and "which has 256 channels (0..255)" in body["error"]


def test_closing_the_server_cancels_its_jobs_and_waits_for_every_thread():
    """A thread left running while the interpreter shuts down, dropping the model's tensors,
    makes PyTorch abort the process (exit status -6 after Ctrl-C): closing joins them all."""
    s = scene("resnet18", weights=True)
    server = serve(s, port=0, device="cpu")
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    status, job = get_json(server.url, "/api/job?kind=erf&layer=layer4&unit=3,3&inputs=512", "POST")
    assert status == 200 and get_json(server.url, "/api/meta")[0] == 200
    server.shutdown()
    server.server_close()
    serving.join(5)
    left = [t.name for t in threading.enumerate() if t is not threading.main_thread()
            and (t.name.startswith("rflens-job") or "process_request" in t.name)]
    assert left == [] and server.jobs.get(job["id"]).state == "cancelled"


def _wait(url: str, ident: str, limit: float = 120) -> dict:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        _, job = get_json(url, f"/api/job?id={ident}")
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {ident} still running after {limit} s")
