"""The command line: output formats, the JSON contract, and clean failures."""

from __future__ import annotations

import json
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
