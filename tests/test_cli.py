"""The command line: output formats, the JSON contract, and clean failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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


def test_table_json_records(capsys):
    code, out, _ = run(capsys, "table", "resnet18", "--input-size", "3x64x64", "--format", "json")
    assert code == 0
    records = {r["name"]: r for r in json.loads(out)}
    assert set(records["layer1.0.add"]) >= {"name", "op", "output_shape", "rf_size", "stride", "start",
                                             "uniform", "global"}
    assert records["fc"]["global"] is True and records["layer1"]["global"] is False
    assert records["conv1"]["rf_size"] == [7, 7] and records["conv1"]["start"] == [-3, -3]


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
    (["table", "fasterrcnn_mobilenet_v3_large_320_fpn"], "depends on tensor values"),
])
def test_bad_input_is_one_message_and_exit_code_2(capsys, argv, needle):
    code, out, err = run(capsys, *argv)
    assert code == 2 and needle in err and "Traceback" not in err and out == ""


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
    assert code == 2 and "other settings (mode)" in err


def test_erf_progress_goes_to_stderr_and_json_stays_clean(capsys, tmp_path, monkeypatch):
    import rflens.cli
    monkeypatch.setattr(rflens.cli, "_stderr_is_terminal", lambda: True)
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
    import rflens.gradient

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(rflens.gradient, "effective_field", interrupted)
    code, out, err = run(capsys, "erf", "resnet18", *SMALL, "--layer", "layer1", "--checkpoint",
                         str(tmp_path / "run.npz"), "-o", str(tmp_path / "erf.png"))
    assert code == 130 and out == "" and "Traceback" not in err
    assert err.splitlines() == [f"rflens: the inputs done so far are kept in {tmp_path / 'run.npz'}; run the same "
                                "command to resume", "rflens: interrupted"]
    assert not (tmp_path / "erf.png").exists()
