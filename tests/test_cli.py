"""The command line: output formats, the JSON contract, and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from trained import weights_file

from rflens.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unit_json_contract(capsys, tmp_path):
    mask = tmp_path / "m.npy"
    code, out, _ = run(capsys, "unit", "vgg16", "--layer", "features.29", "--unit", "7,7",
                       "--format", "json", "--mask-out", str(mask))
    assert code == 0
    rec = json.loads(out)
    assert rec["layer"] == "features.29" and rec["unit"] == [7, 7] and rec["input_size"] == [3, 224, 224]
    assert rec["box"] == [[22, 218], [22, 218]] and rec["unclipped_box"] == [[22, 218], [22, 218]]
    assert rec["center"] == [119.5, 119.5] and rec["support_size"] == 196 * 196 and rec["global"] is False
    saved = np.load(mask)
    assert saved.dtype == bool and saved.shape == (224, 224) and saved.sum() == 196 * 196


def test_unit_says_clipped_only_where_the_field_leaves_the_input(capsys):
    # was "(clipped to the input)" for a box that is not clipped (issue 17)
    _, inside, _ = run(capsys, "unit", "vgg16", "--layer", "features.29", "--unit", "7,7")
    assert "box          [22, 218) x [22, 218)  (inside the input)\n" in inside and "unclipped" not in inside
    _, corner, _ = run(capsys, "unit", "vgg16", "--layer", "features.29", "--unit", "0,0")
    assert ("box          [0, 106) x [0, 106)  (clipped to the input)\n"
            "unclipped    [-90, 106) x [-90, 106)\n") in corner


def test_table_json_records(capsys):
    code, out, _ = run(capsys, "table", "resnet18", "--input-size", "3x64x64", "--format", "json")
    assert code == 0
    records = {r["name"]: r for r in json.loads(out)}
    assert set(records["layer1.0.add"]) >= {"name", "op", "output_shape", "rf_size", "stride", "start",
                                             "uniform", "global"}
    assert records["fc"]["global"] is True and records["layer1"]["global"] is False
    assert records["conv1"]["rf_size"] == [7, 7] and records["conv1"]["start"] == [-3, -3]


def test_table_says_global_and_gives_the_local_field_in_every_format(capsys):
    # was "404 | 224 | -90 | global, covers input": a size past the input and its width as stride (issue 17)
    _, md, _ = run(capsys, "table", "vgg16", "--format", "markdown")
    assert "| classifier.0 | Linear | 1x4096 | global (local 212) | 32 | -90 | covers input |" in md
    assert "| features.30 | MaxPool2d | 1x512x7x7 | 212 | 32 | -90 |  |" in md
    _, csv_out, _ = run(capsys, "table", "resnet18", "--format", "csv")
    assert "avgpool,AdaptiveAvgPool2d,1x512x1x1,global (local 435),32,-217,covers input\r\n" in csv_out
    assert "layer4,Sequential,1x512x7x7,435,32,-217,paths 11..435\r\n" in csv_out
    _, text, _ = run(capsys, "table", "resnet18")
    assert "│ fc " in text and "global (local 435)" in text and "627" not in text
    _, js, _ = run(capsys, "table", "resnet18", "--format", "json")
    fc = {r["name"]: r for r in json.loads(js)}["fc"]
    assert (fc["rf_size"], fc["stride"], fc["global"]) == ([627, 627], [224, 224], True)  # as before
    assert (fc["local_rf_size"], fc["local_stride"], fc["local_start"]) == ([435, 435], [32, 32], [-217, -217])


def test_unit_of_a_global_layer_says_global_and_gives_the_local_field(capsys):
    _, text, _ = run(capsys, "unit", "resnet18", "--layer", "avgpool", "--unit", "0,0")
    assert "layer RF     global (local 435, stride 32)\n" in text and "627" not in text
    _, js, _ = run(capsys, "unit", "resnet18", "--layer", "avgpool", "--unit", "0,0", "--format", "json")
    rec = json.loads(js)
    assert (rec["rf_size"], rec["local_rf_size"], rec["global"]) == ([627, 627], [435, 435], True)


@pytest.mark.parametrize("fmt,marker", [("csv", "name,op,output_shape"), ("markdown", "| name | op |"),
                                        ("table", "rf size")])
def test_table_formats(capsys, fmt, marker):
    code, out, _ = run(capsys, "table", "alexnet", "--format", fmt)
    assert code == 0 and marker in out and "features.12" in out


def test_module_callable_models(capsys, tmp_path):
    (tmp_path / "mynet.py").write_text(
        "import torch.nn as nn\n"
        "def build(width=4):\n"
        "    return nn.Sequential(nn.Conv2d(1, width, 5), nn.AvgPool2d(2))\n")
    code, out, _ = run(capsys, "unit", f"{tmp_path / 'mynet.py'}:build", "--model-arg", "width=2",
                       "--input-size", "1x30x30", "--layer", "1", "--unit", "4,5", "--format", "json")
    assert code == 0 and json.loads(out)["box"] == [[8, 14], [10, 16]]


def test_probe_method_agrees(capsys):
    args = ["unit", "alexnet", "--layer", "features.5", "--unit", "0,3", "--format", "json"]
    _, analytic, _ = run(capsys, *args)
    code, probe, _ = run(capsys, *args, "--method", "probe")
    assert code == 0 and json.loads(probe)["box"] == json.loads(analytic)["box"]


@pytest.mark.parametrize("argv,needle", [
    (["table", "resnet5O"], "resnet50"),
    (["unit", "vgg16", "--layer", "features.99", "--unit", "0,0"], "features.9"),
    (["unit", "vgg16", "--layer", "features.29", "--unit", "14,0"], "(14, 14)"),
    (["unit", "vgg16", "--layer", "features.29", "--unit", "a,b"], "integers"),
    (["table", "alexnet", "--input-size", "3x32x32"], "too small"),
    (["table", "vgg16", "--input-size", "3x"], "CxHxW"),
    (["unit", "vgg16", "--layer", "features.29", "--mask-out", "/nonexistent/dir/m.npy"], "does not exist"),
    (["table", "nosuchmodule.sub:build"], "cannot import"),
    (["table", "raft_small"], "missing 1 required positional argument"),
    (["unit", "fasterrcnn_mobilenet_v3_large_320_fpn", "--layer", "output[0]['boxes']"],
     "through op 'topk' in module 'rpn' (which elements it reads depends on tensor values)"),
])
def test_bad_input_is_one_message_and_exit_code_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize("argv", [
    ["show", "alexnet", "--layer", "features.12", "-o", "{file}/rf.png"],
    ["grid", "alexnet", "--unit", "1,1", "-o", "{file}/grid.png"],
    ["overlay", "alexnet", "--image", "{file}", "--layers", "features.12", "-o", "{file}/overlay.png"],
    ["growth", "alexnet", "-o", "{file}/growth.png"],
    ["unit", "alexnet", "--layer", "features.12", "--mask-out", "{file}/mask.npy"],
    ["view", "alexnet", "--html", "{file}/view.html"],
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(capsys, tmp_path, monkeypatch, argv):
    """`show -o` in a folder that cannot take the file used to fail after the analysis (54 s on a
    large model) as an internal error; now at once, exit 2, naming the path and why."""
    def no_work(*a, **k):
        raise AssertionError("the model was analysed before the output was checked")
    monkeypatch.setattr("rflens.analyze", no_work)
    monkeypatch.setattr("rflens.viewer.scene.analyze", no_work)
    file = tmp_path / "a_file"
    file.write_text("in the way")
    code, out, err = run(capsys, *[a.format(file=file) for a in argv])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"cannot write '{file}/" in err and f"'{file}' is a file, not a folder" in err
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_the_installed_command_runs():
    res = subprocess.run([sys.executable, "-m", "rflens.cli", "unit", "vgg16", "--layer", "features.30"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "stride 32" in res.stdout


# -- erf and grad: gradients with the model's own weights ---------------------------------------

SMALL = ["--input-size", "3x64x64"]


def erf_json(capsys, tmp_path, *argv):
    code, out, err = run(capsys, "erf", "resnet18", *SMALL, "--format", "json", "-o", str(tmp_path / "erf.png"), *argv)
    assert code == 0, err
    return json.loads(out)


def test_erf_of_a_resnet18_unit_in_json_and_text(capsys, tmp_path):
    import rflens
    from rflens.models import load_model

    rec = erf_json(capsys, tmp_path, "--layer", "layer2", "--noise", "4")
    # the exact RF centre of layer2's centre unit (4, 4) on 64x64 is pixel 32, not the image centre 31.5
    assert rflens.analyze(load_model("resnet18"), (3, 64, 64))["layer2"].unit(None).center == (32, 32)
    assert rec["unit"] == [4, 4] and rec["rf_center"] == [32, 32] and rec["rf_box"] == [[0, 64], [0, 64]]
    assert rec["inputs"] == 4 and rec["skipped"] == 0 and rec["weights"] == "random weights (torch seed 0)"
    assert all(4 < s < 32 for s in rec["sigma"])
    assert all(abs(o) < 3 for o in rec["offset"])  # noise is symmetric: the mass sits on the RF centre
    assert 0 < rec["mass_radii"]["50%"] < rec["mass_radii"]["90%"] < rec["mass_radii"]["95%"]
    assert rec["figure"] == str(tmp_path / "erf.png") and (tmp_path / "erf.png").read_bytes()[:4] == b"\x89PNG"

    code, out, _ = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer2", "--noise", "4",
                       "-o", str(tmp_path / "erf.png"))
    lines = out.splitlines()
    assert code == 0 and lines[-1] == str(tmp_path / "erf.png")
    assert "layer          layer2, unit 4, 4 (all channels), mode luo" in lines
    assert "RF centre      32, 32  (not the image centre, 31.5, 31.5: compare the ERF with this)" in lines
    assert "inputs         4 used: 4 Gaussian noise inputs (seed 0)" in lines
    assert f"sigma          {rec['sigma'][0]:.2f} x {rec['sigma'][1]:.2f} px  (moment Gaussian)" in lines
    assert any(line.startswith("area ratio     20%: ") for line in lines)


def test_erf_over_a_folder_of_images_skips_a_broken_file(capsys, tmp_path):
    from PIL import Image
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / name)
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    rec = erf_json(capsys, tmp_path, "--layer", "layer1", "--images", str(folder))
    assert rec["inputs"] == 2 and rec["skipped"] == 1 and rec["source"] == f"images in {folder}"
    assert rec["skipped_files"][0][0] == str(folder / "c.png") and "cannot read" in rec["skipped_files"][0][1]

    code, out, _ = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--images", str(folder),
                       "-o", str(tmp_path / "erf.png"))
    assert code == 0 and f"inputs         2 used: images in {folder}; 1 skipped" in out
    assert f"skipped        {folder / 'c.png'}: cannot read" in out


def test_erf_of_two_layers_is_one_comparison_picture(capsys, tmp_path):
    records = erf_json(capsys, tmp_path, "--layer", "layer1,layer2", "--noise", "2")
    assert [r["layer"] for r in records] == ["layer1", "layer2"]
    assert [r["rf_box"] for r in records] == [[[11, 54], [11, 54]], [[0, 64], [0, 64]]]
    assert records[0]["sigma"][0] < records[1]["sigma"][0]  # the ERF grows with depth
    assert {r["figure"] for r in records} == {str(tmp_path / "erf.png")}
    assert sorted(os.listdir(tmp_path)) == ["erf.png"]


def test_erf_with_weights_from_a_file(capsys, tmp_path):
    import torch
    import torchvision

    import rflens
    torch.manual_seed(1)
    model = torchvision.models.resnet18().eval()
    torch.save(model.state_dict(), tmp_path / "w.pth")
    loaded = erf_json(capsys, tmp_path, "--layer", "layer1", "--noise", "2", "--weights", str(tmp_path / "w.pth"))
    assert loaded["weights"] == f"loaded 122 tensors from {tmp_path / 'w.pth'} (torch)"
    direct = rflens.effective_field(model, "layer1", inputs=2, input_size=(3, 64, 64), device="cpu")
    assert loaded["sigma"] == [round(s, 4) for s in direct.sigma]
    random = erf_json(capsys, tmp_path, "--layer", "layer1", "--noise", "2")
    assert random["sigma"] != loaded["sigma"]

    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), tmp_path / "ten.pth")
    code, out, err = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--noise", "2",
                         "--weights", str(tmp_path / "ten.pth"), "-o", str(tmp_path / "bad.png"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("rflens: error: ") and "does not fit" in err and "fc.weight" in err
    assert not (tmp_path / "bad.png").exists()


def test_erf_resumes_from_a_checkpoint(capsys, tmp_path):
    ck = str(tmp_path / "run.npz")
    first = erf_json(capsys, tmp_path, "--layer", "layer1", "--limit", "2", "--checkpoint", ck)
    second = erf_json(capsys, tmp_path, "--layer", "layer1", "--limit", "4", "--checkpoint", ck)
    fresh = erf_json(capsys, tmp_path, "--layer", "layer1", "--limit", "4")
    assert (first["inputs"], second["inputs"], fresh["inputs"]) == (2, 4, 4)
    assert second["sigma"] == fresh["sigma"] and second["center_of_mass"] == fresh["center_of_mass"]
    code, _, err = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--limit", "4", "--mode",
                       "replknet", "--checkpoint", ck, "-o", str(tmp_path / "erf.png"))
    assert code == 2 and "other settings (mode: 'luo' then, 'replknet' now)" in err


def test_erf_progress_goes_to_stderr_and_json_stays_clean(capsys, tmp_path, monkeypatch):
    import rflens.cli.common
    monkeypatch.setattr(rflens.cli.common, "stderr_is_terminal", lambda: True)
    code, out, err = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--noise", "4", "--batch-size",
                         "2", "--format", "json", "-o", str(tmp_path / "erf.png"))
    assert code == 0 and json.loads(out)["inputs"] == 4
    assert "resnet18 layer1" in err and "4/4" in err and "ETA" in err


@pytest.mark.parametrize("argv,needle", [
    (["resnet18", "--layer", "layer9"], "no layer named 'layer9'"),
    (["resnet18", "--layer", "layer2", "--unit", "9,9"], "unit (9, 9) is outside layer 'layer2', whose grid is (8, 8)"),
    (["resnet18", "--layer", "layer2", "--noise", "0"], "--noise 0: the number of noise inputs must be at least 1"),
    (["resnet18", "--layer", "layer2", "--images", "/nonexistent/folder"], "no folder at '/nonexistent/folder'"),
    (["resnet18", "vgg11", "--layer", "layer1", "--weights", "w.pth"], "--weights loads one file into one model"),
    (["resnet18", "--layer", "layer1,layer2", "--checkpoint", "c.npz"], "--checkpoint resumes one computation"),
    (["resnet18", "--layer", "layer1", "-o", "erf.bmp"], ".png, .svg or .pdf"),
])
def test_erf_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "erf", *argv, *SMALL)
    assert code == 2 and out == "" and err.startswith("rflens: error: ") and err.count("\n") == 1
    assert needle in err and os.listdir(tmp_path) == []


def test_grad_at_a_zero_input_puts_the_missing_pixels_down_to_activations(capsys, tmp_path):
    out_png = tmp_path / "grad.png"
    code, out, _ = run(capsys, "grad", "resnet18", *SMALL, "--layer", "layer2", "--unit", "4,4", "-o", str(out_png))
    lines = out.splitlines()
    assert code == 0 and lines[-1] == str(out_png) and out_png.read_bytes()[:4] == b"\x89PNG"
    # at zeros every ReLU sits at its kink, where PyTorch's derivative is 0: no pixel is reached
    assert "input        zeros" in lines and "support      4096 pixels in the theoretical RF" in lines
    assert "nonzero      0 pixels with a nonzero gradient (0.0% of the support)" in lines
    assert "missed       3844 activations, 252 max, 0 other" in lines
    assert lines[lines.index("missed       3844 activations, 252 max, 0 other") + 1].startswith(
        "why          3844 of 4096 pixels (93.8%): activations with a zero derivative")

    code, out, _ = run(capsys, "grad", "resnet18", *SMALL, "--layer", "layer2", "--unit", "4,4", "--format", "json",
                       "-o", str(out_png))
    rec = json.loads(out)
    assert code == 0 and rec["nonzero"] == 0 and rec["missed"] == {"activations": 3844, "max": 252, "other": 0}
    assert rec["outside"] == 0 and rec["figure"] == str(out_png) and "activation" in rec["explanation"][0]


def test_grad_on_a_photograph_reaches_the_whole_support(capsys, tmp_path):
    from PIL import Image
    from skimage import data
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    code, out, _ = run(capsys, "grad", "resnet18", *SMALL, "--layer", "layer1", "--unit", "8,8", "--image",
                       str(tmp_path / "astronaut.png"), "--format", "json", "-o", str(tmp_path / "g.png"))
    rec = json.loads(out)
    assert code == 0 and rec["theoretical_box"] == [[11, 54], [11, 54]] and rec["theoretical_support"] == 43 * 43
    assert rec["outside"] == 0 and rec["nonzero"] + sum(rec["missed"].values()) == 43 * 43
    assert rec["nonzero"] > 0.9 * 43 * 43


@pytest.mark.parametrize("argv,needle", [
    (["--layer", "layer2", "--unit", "8,0"], "unit (8, 0) is outside layer 'layer2'"),
    (["--layer", "layer2", "--unit", "4,4", "--image", "nope.png"], "no image at 'nope.png'"),
    (["--layer", "layer2", "--unit", "4,4", "--channel", "128"], "channel 128 is outside layer 'layer2'"),
    (["--layer", "layer2", "--unit", "4,4", "--trust-checkpoint"], "only applies to a file given with --weights"),
    (["--layer", "layer2", "--unit", "4,4", "--weights", "none.pth"], "no weights file at 'none.pth'"),
])
def test_grad_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "grad", "resnet18", *SMALL, *argv)
    assert code == 2 and out == "" and err.startswith("rflens: error: ") and err.count("\n") == 1
    assert needle in err and os.listdir(tmp_path) == []


def test_an_interrupted_erf_exits_130_and_says_how_to_resume(capsys, tmp_path, monkeypatch):
    import rflens

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rflens, "effective_field", interrupted)
    code, out, err = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--checkpoint",
                         str(tmp_path / "run.npz"), "-o", str(tmp_path / "erf.png"))
    assert code == 130 and out == "" and "Traceback" not in err
    assert err.splitlines() == [f"rflens: the inputs done so far are kept in {tmp_path / 'run.npz'}; run the same "
                                "command to resume", "rflens: interrupted"]
    assert not (tmp_path / "erf.png").exists()


# -- scan, empirical and segment on a trained network: MTCNN's ONet on LFW faces ----------------

needs_mtcnn = pytest.mark.skipif(weights_file() is None, reason="facenet-pytorch not installed (make setup)")
ONET = f"{os.path.join(os.path.dirname(__file__), 'trained.py')}:trained_onet"
# ONet's own input: 48x48, pixels as (x * 255 - 127.5) / 128, i.e. mean 0.5 and std 0.5 on [0, 1]
AS_ONET = ["--input-size", "3x48x48", "--normalize", "0.5,0.5"]


def cli_json(*argv) -> dict:
    """``main`` run outside a test's capsys (module fixtures), its JSON output parsed."""
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(list(argv))
    assert code == 0
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """30 LFW faces (25x25 grey PNGs, brought to 48x48 RGB by --input-size) and a corrupt file."""
    from trained import lfw_folder
    return lfw_folder(tmp_path_factory.mktemp("faces"), 30)


@pytest.fixture(scope="module")
def onet_scan(faces, tmp_path_factory):
    """``rflens scan`` of pool2 (64 channels on a 10x10 grid, RF 13), top 3 faces per channel."""
    out = tmp_path_factory.mktemp("scans") / "pool2"
    rec = cli_json("scan", ONET, "--layer", "pool2", "--images", str(faces), *AS_ONET, "--top-k", "3",
                   "--batch-size", "8", "--out", str(out), "--format", "json")
    return out, rec


@needs_mtcnn
def test_scan_of_a_face_folder_counts_skips_and_writes_the_scan(onet_scan, faces):
    from trained import trained_onet

    import rflens

    out, rec = onet_scan
    assert (rec["layer"], rec["channels"], rec["grid"], rec["k"]) == ("pool2", 64, [10, 10], 3)
    assert (rec["seen"], rec["skipped"], rec["state"]) == (30, 1, "new")
    assert rec["skipped_files"][0][0] == str(faces / "zz_broken.png") and "cannot read" in rec["skipped_files"][0][1]
    assert rec["normalize"] == [0.5, 0.5] and rec["input_size"] == [3, 48, 48]
    assert rec["scan"] == str(out / "scan.npz") and sorted(os.listdir(out)) == ["scan.npz", "settings.json"]
    # the same scan as the library makes with ONet's normalisation
    direct = rflens.top_images(trained_onet(), "pool2", faces, 3, input_size=(3, 48, 48), normalize=(0.5, 0.5),
                               device="cpu")
    saved = rflens.Scan.load(out)
    np.testing.assert_array_equal(saved.scores, direct.scores)
    np.testing.assert_array_equal(saved.images, direct.images)
    top = saved.top(0)[0]
    assert os.path.basename(top.name) == "face003.png" and top.score == pytest.approx(1.664, abs=1e-3)


@needs_mtcnn
def test_running_scan_again_returns_the_finished_scan_and_says_so(capsys, onet_scan, faces):
    out, _ = onet_scan
    code, stdout, _ = run(capsys, "scan", ONET, "--layer", "pool2", "--images", str(faces), *AS_ONET,
                          "--top-k", "3", "--out", str(out))
    lines = stdout.splitlines()
    assert code == 0
    assert lines[1] == "layer        pool2: 64 channels on a 10x10 grid, top 3 images each"
    assert lines[2] == f"images       30 scanned in {faces}; 1 skipped (mean 0.5, std 0.5)"
    assert lines[3].startswith(f"skipped      {faces / 'zz_broken.png'}: cannot read")
    assert lines[4] == f"scan         {out / 'scan.npz'}  (finished earlier: delete it to scan again)"


class _Interrupting:
    """A progress display whose first update is a Ctrl-C, after the first batch was saved."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        raise KeyboardInterrupt


@needs_mtcnn
def test_an_interrupted_scan_exits_130_and_the_same_command_resumes_to_the_same_file(
        capsys, monkeypatch, onet_scan, faces, tmp_path):
    import rflens.cli.common
    import rflens.cli.scan
    out = tmp_path / "scan"
    argv = ["scan", ONET, "--layer", "pool2", "--images", str(faces), *AS_ONET, "--top-k", "3", "--batch-size", "8",
            "--out", str(out)]
    with monkeypatch.context() as m:
        m.setattr(rflens.cli.scan, "progress", _Interrupting)
        code, stdout, err = run(capsys, *argv)
    assert code == 130 and stdout == "" and "Traceback" not in err
    assert err.splitlines() == [f"rflens: the images scanned so far are kept in {out / 'scan.partial.npz'}; run the "
                                "same command to resume", "rflens: interrupted"]
    assert sorted(os.listdir(out)) == ["scan.partial.npz", "settings.json"]  # no half-made scan.npz

    monkeypatch.setattr(rflens.cli.common, "stderr_is_terminal", lambda: True)
    code, stdout, err = run(capsys, *argv, "--format", "json")
    assert code == 0 and json.loads(stdout)["state"] == "resumed"
    assert "scanning" in err and "31/31" in err and "ETA" in err  # 30 faces and the broken file
    assert sorted(os.listdir(out)) == ["scan.npz", "settings.json"]
    with np.load(out / "scan.npz") as resumed, np.load(onet_scan[0] / "scan.npz") as fresh:
        assert sorted(resumed.files) == sorted(fresh.files)
        for key in fresh.files:
            np.testing.assert_array_equal(resumed[key], fresh[key])


@needs_mtcnn
def test_empirical_from_a_scan_prints_the_table_row_and_draws_the_units(capsys, onet_scan, tmp_path):
    from trained import trained_onet

    import rflens

    out, _ = onet_scan
    small = ["--units", "0,1", "--top-k", "2", "--occluder", "5", "--stride", "4"]
    code, stdout, err = run(capsys, "empirical", ONET, "--layer", "pool2", "--scan", str(out), *small,
                            "--format", "json", "-o", str(tmp_path / "emp.png"))
    assert code == 0, err
    rec = json.loads(stdout)
    assert rec["theoretical_size"] == [13, 13] and rec["units"] == 2 and rec["input_size"] == [3, 48, 48]
    assert rec["occluder"] == {"size": 5, "stride": 4, "fill": "random", "seed": 0} and rec["discrepancy"] == "abs"
    assert [f["images"] for f in rec["fields"]] == [2, 2]
    # the map includes the occluder's 4-pixel overhang on each side of the 13-pixel RF
    assert all(0 < s <= 13 + 2 * 4 for s in rec["unit_sizes"].values())
    assert rec["empirical_mean"] == pytest.approx(np.mean(list(rec["unit_sizes"].values())))
    assert rec["figure"] == str(tmp_path / "emp.png") and (tmp_path / "emp.png").read_bytes()[:4] == b"\x89PNG"
    # the scan's normalisation (settings.json) was used: the library, told it, agrees
    direct = rflens.empirical_field(trained_onet(), "pool2", [0, 1], scan=rflens.Scan.load(out), k=2,
                                    occluder=rflens.Occluder(5, 4), normalize=(0.5, 0.5), device="cpu")
    assert {str(c): f.size for c, f in direct.fields.items()} == rec["unit_sizes"]

    code, stdout, _ = run(capsys, "empirical", ONET, "--layer", "pool2", "--scan", str(out), *small,
                          "-o", str(tmp_path / "emp.png"))
    lines = stdout.splitlines()
    sizes = rec["unit_sizes"]
    assert code == 0 and lines[-1] == str(tmp_path / "emp.png")
    assert "theoretical  13 px" in lines and f"unit sizes   0: {sizes['0']}, 1: {sizes['1']}" in lines
    assert (f"empirical    {rec['empirical_mean']:.2f} ± {rec['empirical_std']:.2f} px over 2 units  (smallest "
            "centred square holding 90% of the averaged map)") in lines
    assert "occluder     5x5, stride 4, random fill (seed 0); discrepancy abs" in lines
    assert "computed     by incremental re-inference of each occluder's projective field" in lines
    assert rec["incremental_fallback"] is None


@needs_mtcnn
def test_empirical_with_a_checkpoint_gives_the_same_table_when_run_again(capsys, onet_scan, tmp_path):
    out, _ = onet_scan
    args = ["empirical", ONET, "--layer", "pool2", "--scan", str(out), "--units", "2,3", "--top-k", "2",
            "--occluder", "5", "--stride", "4", "--checkpoint", str(tmp_path / "occ.npz"), "--format", "json",
            "-o", str(tmp_path / "emp.png")]
    code, first, err = run(capsys, *args)
    assert code == 0, err and (tmp_path / "occ.npz").exists()
    code, again, _ = run(capsys, *args)  # every image comes from the checkpoint
    assert code == 0 and json.loads(again)["unit_sizes"] == json.loads(first)["unit_sizes"]
    code, _, err = run(capsys, *args[:-4], "--checkpoint", str(tmp_path / "occ.txt"))
    assert code == 2 and "must end in .npz" in err


@needs_mtcnn
def test_empirical_straight_from_a_folder_scans_it_first(capsys, faces, tmp_path):
    code, stdout, err = run(capsys, "empirical", ONET, "--layer", "pool3", "--images", str(faces), *AS_ONET,
                            "--units", "7", "--top-k", "1", "--occluder", "7", "--stride", "6", "--format", "json",
                            "-o", str(tmp_path / "one.png"))
    assert code == 0, err
    rec = json.loads(stdout)
    assert rec["scan"] is None and rec["theoretical_size"] == [25, 25] and list(rec["unit_sizes"]) == ["7"]
    assert (tmp_path / "one.png").exists() and os.listdir(tmp_path) == ["one.png"]


@needs_mtcnn
def test_segment_draws_both_methods_for_the_top_faces(capsys, onet_scan, tmp_path):
    import rflens
    out, _ = onet_scan
    scan = rflens.Scan.load(out)
    code, stdout, err = run(capsys, "segment", ONET, "--layer", "pool2", "--channel", "0", "--scan", str(out),
                            "--method", "both", "--occluder", "5", "--stride", "4", "--format", "json",
                            "-o", str(tmp_path / "sheet.png"))
    assert code == 0, err
    rec = json.loads(stdout)
    assert [s["method"] for s in rec["segments"]] == ["netdissect"] * 3 + ["occlusion"] * 3
    assert [s["image"] for s in rec["segments"]] == [t.name for t in scan.top(0)] * 2
    assert {s["level"] for s in rec["segments"][:3]} == {round(scan.threshold(0), 5)}  # the scan's top 0.5%
    assert all(0 < s["mask_pixels"] < 48 * 48 for s in rec["segments"])
    assert (tmp_path / "sheet.png").read_bytes()[:4] == b"\x89PNG"

    code, stdout, _ = run(capsys, "segment", ONET, "--layer", "pool2", "--channel", "0", "--scan", str(out),
                          "--top-k", "1", "-o", str(tmp_path / "sheet.png"))
    lines = stdout.splitlines()
    assert code == 0 and lines[-1] == str(tmp_path / "sheet.png")
    assert lines[2] == f"netdissect   activation >= {scan.threshold(0):.4g} (the scan's top 0.5%)"
    assert lines[3].startswith("   1. face003.png  score 1.664, ")


@needs_mtcnn
def test_segment_takes_the_channel_as_deprecated_unit_too_with_one_warning(capsys, onet_scan, tmp_path):
    out, _ = onet_scan
    argv = ["segment", ONET, "--layer", "pool2", "--scan", str(out), "--top-k", "1", "--format", "json"]
    code, by_channel, err = run(capsys, *argv, "--channel", "5", "-o", str(tmp_path / "channel.png"))
    assert code == 0 and err == ""
    code, by_unit, err = run(capsys, *argv, "--unit", "5", "-o", str(tmp_path / "unit.png"))
    assert code == 0 and err == "rflens: warning: --unit is deprecated for segment; use --channel\n"
    by_channel, by_unit = json.loads(by_channel), json.loads(by_unit)
    assert by_unit.pop("figure") == str(tmp_path / "unit.png")
    assert by_channel.pop("figure") == str(tmp_path / "channel.png")
    assert by_unit == by_channel and by_unit["channel"] == 5


@pytest.mark.parametrize("flags,message", [
    ([], "one of the arguments --channel is required"),
    (["--channel", "1", "--unit", "2"], "argument --unit: not allowed with argument --channel"),
])
def test_segment_needs_exactly_one_channel_flag(capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        main(["segment", "resnet18", "--layer", "layer1", "--scan", "scan", *flags])
    assert e.value.code == 2 and capsys.readouterr().err.endswith(f"rflens segment: error: {message}\n")


@needs_mtcnn
@pytest.mark.parametrize("argv,needle", [
    (["empirical", "--layer", "pool9", "--scan", "{scan}"], "no layer named 'pool9' in this model. Did you mean"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--units", "0,64"],
     "--units 0,64: channel 64 is outside layer 'pool2', which has 64 channels (0..63)"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--units", "a-b"], "use channel numbers such as 0-15"),
    (["empirical", "--layer", "pool2", "--scan", "{faces}"], "no scan at '{faces}/scan.npz' (make one with `rflens scan`)"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--occluder", "49"],
     "an occluder of 49 pixels does not fit the 48x48 input"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--top-k", "5"], "the scan kept 3 images per channel"),
    (["empirical", "--layer", "pool3", "--scan", "{scan}"], "the scan in '{scan}' is of layer 'pool2', not 'pool3'"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--normalize", "imagenet"],
     "--normalize imagenet: the scan in '{scan}' was made with --normalize 0.5,0.5"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "--input-size", "3x64x64"], "was made at 3x48x48"),
    (["empirical", "--layer", "pool2", "--scan", "{scan}", "-o", "e.jpg"], ".png, .svg or .pdf"),
    (["segment", "--layer", "pool2", "--channel", "64", "--scan", "{scan}"], "--channel 64: channel 64 is outside"),
    (["scan", "--layer", "pool2", "--images", "{faces}", "--normalize", "0.5"], "--normalize '0.5': use imagenet"),
    (["scan", "--layer", "pool2", "--images", "{faces}", "--out", "{scan}", "--limit", "10"],
     "'{scan}' holds a scan made with no --limit; use the same, or another --out"),
    (["scan", "--layer", "prelu9", "--images", "{faces}"], "no layer named 'prelu9'"),
    (["scan", "--layer", "pool2", "--images", "{faces}", "--top-k", "0"], "--top-k 0: must be at least 1"),
])
def test_scan_empirical_segment_bad_input_is_one_line_and_exit_code_2(capsys, monkeypatch, tmp_path, onet_scan,
                                                                      faces, argv, needle):
    monkeypatch.chdir(tmp_path)
    fill = {"scan": str(onet_scan[0]), "faces": str(faces)}
    command, *rest = [a.format(**fill) for a in argv]
    code, out, err = run(capsys, command, ONET, *AS_ONET, *rest)  # the last of a repeated flag counts
    assert code == 2 and out == "" and err.startswith("rflens: error: ") and err.count("\n") == 1
    assert needle.format(**fill) in err and os.listdir(tmp_path) == []


# -- library behaviour found from the CLI ----------------------------------------------------------

@needs_mtcnn
def test_library_segment_by_occlusion_works_from_a_scan_alone(onet_scan):
    from trained import trained_onet

    import rflens
    segments = rflens.segment(trained_onet(), "pool2", 0, scan=rflens.Scan.load(onet_scan[0]), k=1,
                              method="occlusion", occluder=rflens.Occluder(5, 4), normalize=(0.5, 0.5), device="cpu")
    assert len(segments) == 1


@needs_mtcnn
def test_library_scan_refuses_a_folder_scanned_with_another_normalisation(faces, tmp_path):
    from trained import trained_onet

    import rflens
    net = trained_onet()
    rflens.top_images(net, "pool2", faces, 1, input_size=(3, 48, 48), normalize=(0.5, 0.5), limit=4,
                      device="cpu", out=tmp_path)
    with pytest.raises(rflens.RFLensError, match="other settings"):
        rflens.top_images(net, "pool2", faces, 1, input_size=(3, 48, 48), limit=4, device="cpu", out=tmp_path)


def test_a_json_run_without_o_prints_json_and_writes_nothing(capsys, tmp_path, monkeypatch):
    # was: a PNG named after the whole model argument in the current folder (issue 17)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "grad", "resnet18", "--layer", "layer1", "--unit", "2,2", "--input-size", "3x32x32",
                       "--format", "json")
    assert code == 0 and json.loads(out)["figure"] is None and list(tmp_path.iterdir()) == []


def test_default_picture_names_are_short():
    from rflens.cli.common import name_of
    assert name_of("mobilenet_v2=/data/runs/2026/exp3/weights/mobilenet_v2-b0353104.pth") == "mobilenet_v2-b0353104"
    assert [name_of(s) for s in ("vgg16", "timm:convnext_tiny", "nets.py:Net", "models/net.onnx")] == [
        "vgg16", "convnext_tiny", "Net", "net"]


def test_every_option_has_a_help_line_and_every_command_examples_that_parse():
    import argparse
    import shlex

    from rflens.cli import COMMANDS, build_parser
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(commands) == sorted(c.__name__.rpartition(".")[2] for c in COMMANDS)
    for name, sp in commands.items():
        bare = [a.dest for a in sp._actions if not a.help and not isinstance(a, argparse._HelpAction)]
        assert not bare, f"rflens {name}: options without a help line: {bare}"
        examples = [line.strip() for line in sp.epilog.splitlines()[1:]]
        assert sp.epilog.startswith("examples:\n") and 1 <= len(examples) <= 3, name
        for example in examples:
            argv = shlex.split(example.split(" > ")[0])
            assert argv[:2] == ["rflens", name]
            assert parser.parse_args(argv[1:]).command == name  # argparse exits 2 on a bad example


def test_help_version_and_argument_errors_answer_before_torch_is_imported():
    """`import rflens` imported torch (7-14 s on a busy machine, issue 17): the CLI now parses
    its arguments, prints help and the version, and refuses bad arguments without it."""
    script = ("import sys, contextlib, io\n"
              "from rflens.cli import main\n"
              "for argv in (['--help'], ['table', '--help'], ['empirical', '--help'], ['--version'], ['table'],"
              " ['unit', 'vgg16', '--layer', 'x', '--format', 'xml'], ['nope']):\n"
              "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
              "        try:\n"
              "            main(argv)\n"
              "        except SystemExit as e:\n"
              "            assert e.code == (0 if '--help' in argv or '--version' in argv else 2), (argv, e.code)\n"
              "heavy = sorted(m for m in ('torch', 'torchvision', 'numpy', 'matplotlib') if m in sys.modules)\n"
              "print(heavy)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    version = subprocess.run([sys.executable, "-m", "rflens.cli", "--version"], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert version.stdout == "rflens 0.1.0\n" and version.returncode == 0


def test_the_lazy_facade_gives_the_same_objects_as_the_modules():
    import rflens
    from rflens.engine.analyze import analyze
    from rflens.models.adapt import adapt
    assert rflens.analyze is analyze and rflens.adapt is adapt and rflens.models.adapt is adapt
    assert "analyze" in dir(rflens) and rflens.engine.analysis.Analysis is rflens.Analysis
