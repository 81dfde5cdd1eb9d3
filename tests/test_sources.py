"""Every MODEL source gives the receptive fields of the PyTorch model it came from.

ONNX files are exported inside the tests (TorchScript exporter, opset 17) from torchvision
architectures and from MTCNN's trained ONet and RNet, converted back with onnx2torch, and
compared layer by layer with the source model: the exporter names each ONNX node after the
module scope it ran in, which maps it back to the source's layer name.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from conftest import sample_units
from safetensors.torch import save_file
from torch import nn
from trained import lfw_faces, trained_onet, trained_rnet

import rflens
from rflens.cli import main
from rflens.errors import LayerNotFoundError, RFLensError


def export_onnx(model: nn.Module, size, path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(1, *size),), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], dynamic_axes={"image": {0: "batch"}})
    return str(path)


def source_names(path: str) -> dict[str, str]:
    """onnx2torch module name -> the source layer the exporter's scope names: a node
    '/layer1/layer1.0/conv1/Conv' ran in module layer1.0.conv1 ('layer1.0' refines 'layer1');
    a functional node '/layer1/layer1.0/Add' is FX's 'layer1.0.add'."""
    out = {}
    for node in onnx.load(path).graph.node:
        scope = [p for p in node.name.split("/")[:-1] if p]
        parts: list[str] = []
        for p in scope:
            if parts and p.startswith(parts[-1] + "."):
                parts[-1] = p
            else:
                parts.append(p)
        out[node.name.lstrip("/").replace(".", "/")] = (".".join(parts), node.op_type)
    return out


def assert_same_fields(model: nn.Module, src: rflens.Analysis, converted: rflens.Analysis, path: str,
                       units: int = 4) -> list[str]:
    """Every converted layer that maps to a source layer has its RF size, stride, start and
    global flag, and sampled units have its masks.  Returns the source names compared.  A node
    stands for a module's output only where the module is a leaf (a block's scope holds many
    nodes); others compare with FX's name for the function ('layer1.0.add')."""
    leaves = {n for n, m in model.named_modules() if not list(m.children())}
    compared = []
    for name, (module, op) in source_names(path).items():
        if name not in converted.layers:
            continue
        leaf = re.sub(r"_\d+$", "", module) in leaves
        for candidate in ([module] if leaf else []) + [f"{module}.{op.lower()}" if module else op.lower()]:
            if candidate in src.layers:
                a, b = src[candidate], converted[name]
                assert (b.rf_size, b.stride, b.start, b.is_global) == (a.rf_size, a.stride, a.start, a.is_global), \
                    f"{name} vs {candidate}"
                if len(compared) % 5 == 0:
                    for u in sample_units(a.grid_shape)[:units]:
                        assert np.array_equal(a.unit(u).mask, b.unit(u).mask), f"{name} unit {u}"
                compared.append(candidate)
                break
    return compared


def _vgg11_features():
    return torchvision.models.vgg11().features  # the classifier alone is 120M weights


ONNX_CASES = {
    # name: (builder, input size, a layer and its (rf, stride) at that size)
    "resnet18": (lambda: torchvision.models.resnet18(), (3, 64, 64), "layer4.1.relu_1", (435, 32)),
    "vgg11": (_vgg11_features, (3, 64, 64), "19", (134, 16)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), (3, 64, 64), "features.18.2", (491, 32)),
    "shufflenet_v2_x0_5": (lambda: torchvision.models.shufflenet_v2_x0_5(), (3, 64, 64), "conv5.2", (527, 32)),
}


@pytest.mark.parametrize("arch", ONNX_CASES)
def test_onnx_export_has_the_receptive_fields_of_its_source(arch, tmp_path):
    build, size, layer, (rf, stride) = ONNX_CASES[arch]
    torch.manual_seed(0)
    model = build().eval()
    path = export_onnx(model, size, tmp_path / f"{arch}.onnx")
    src = rflens.analyze(model, size)
    converted = rflens.analyze(rflens.load_model(path), size)
    compared = assert_same_fields(model, src, converted, path)
    assert layer in compared and src[layer].rf_size == (rf, rf) and src[layer].stride == (stride, stride)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert set(convs) <= set(compared)  # every convolution's output was matched
    out = "output" if "output" in converted.layers else converted.layers[-1]
    assert converted[out].rf_size == src["output"].rf_size and converted[out].is_global == src["output"].is_global


def test_onnx_model_agrees_with_the_gradient_oracle(tmp_path, exact):
    torch.manual_seed(0)
    path = export_onnx(torchvision.models.resnet18(), (3, 32, 32), tmp_path / "r18.onnx")
    exact(rflens.load_model(path), (3, 32, 32), max_layers=8)


def test_onnx_shape_arithmetic_is_followed_exactly(tmp_path, exact):
    """ShuffleNet's channel split and shuffle become Shape/Gather/Div/Slice/Reshape nodes on the
    shape of a tensor: computed on real numbers, they cut the right channels."""
    torch.manual_seed(0)
    path = export_onnx(torchvision.models.shufflenet_v2_x0_5(), (3, 32, 32), tmp_path / "shuffle.onnx")
    exact(rflens.load_model(path), (3, 32, 32), max_layers=6)


@pytest.mark.parametrize("net,size", [("onet", 48), ("rnet", 24)])
def test_trained_mtcnn_exported_to_onnx_keeps_weights_and_fields(net, size, tmp_path, exact):
    model = trained_onet() if net == "onet" else trained_rnet()
    path = export_onnx(model, (3, size, size), tmp_path / f"{net}.onnx")
    converted = rflens.load_model(path)
    faces = lfw_faces(8, size)
    with torch.no_grad():
        for a, b in zip(model(faces), converted(faces)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    src = rflens.analyze(model, (3, size, size))
    conv = rflens.analyze(converted, (3, size, size))
    compared = assert_same_fields(model, src, conv, path)
    assert {"conv1", "prelu1", "pool1", "conv2", "pool2", "conv3"} <= set(compared)
    outputs = [n for n in conv.layers if n.startswith("output[")]
    assert outputs == [n for n in src.layers if n.startswith("output[")] and len(outputs) == (3 if net == "onet" else 2)
    for n in outputs:  # the dense layers read every position: global, with no local field left
        assert (conv[n].rf_size, conv[n].is_global, conv[n].local) == (src[n].rf_size, True, None)
    if net == "onet":  # 3 + 2 (pool1) + 2*2 (conv2) + 2*2 (pool2) + 2*4 (conv3) + 1*4 (pool3) + 1*8 (conv4)
        assert src["prelu4"].rf_size == (33, 33) and src["prelu4"].stride == (8, 8)
    exact(converted, (3, size, size), max_layers=6)


def test_onnx_file_gives_its_own_input_size(tmp_path, capsys):
    path = export_onnx(trained_rnet(), (3, 24, 24), tmp_path / "rnet.onnx")
    code = main(["table", path, "--format", "json"])
    records = json.loads(capsys.readouterr().out)
    assert code == 0 and records[0]["output_shape"] == [1, 3, 24, 24]


# --- TorchScript archives ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_archive_is_analysed_exactly_at_its_outputs(how, tmp_path):
    model = torchvision.models.resnet18().eval()
    ts = torch.jit.script(model) if how == "script" else torch.jit.trace(model, torch.randn(1, 3, 64, 64))
    ts.save(str(tmp_path / "r18.pt"))
    a = rflens.analyze(rflens.load_model(str(tmp_path / "r18.pt")), (3, 64, 64))
    src = rflens.analyze(model, (3, 64, 64))
    assert a.layers == ["input", "output"]
    assert (a["output"].rf_size, a["output"].is_global) == (src["output"].rf_size, True) == ((467, 467), True)
    with pytest.raises(LayerNotFoundError, match="no layer named 'layer4'"):
        a["layer4"]
    # with the architecture named, the archive is a weights file and every layer is there
    named = rflens.analyze(rflens.load_model(f"resnet18={tmp_path / 'r18.pt'}"), (3, 64, 64))
    assert named["layer4"].rf_size == src["layer4"].rf_size == (435, 435)


def test_torchscript_archive_masks_equal_the_oracle_checked_source(tmp_path, exact):
    """The probe cannot run TorchScript (its positive twins are Python-level), so the archive is
    held to the source module, which is held to the probe."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, stride=2))
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    src = exact(net, (1, 21, 21), layers=["2"])
    ts = rflens.analyze(rflens.load_model(str(tmp_path / "net.pt")), (1, 21, 21))
    assert (ts["output"].rf_size, ts["output"].stride) == (src["2"].rf_size, src["2"].stride) == ((10, 10), (4, 4))
    for u in np.ndindex(*src["2"].grid_shape):
        assert np.array_equal(ts["output"].unit(u).mask, src["2"].unit(u).mask)


# --- weights files with an architecture ------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_arch_equals_weights_loads_the_file_strictly(suffix, tmp_path):
    torch.manual_seed(1)
    trained = torchvision.models.resnet18(num_classes=10).state_dict()
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(trained, path)
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in trained.items()}}, path)
    model = rflens.load_model(f"resnet18={path}", {"num_classes": 10}, device="cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    with pytest.raises(RFLensError, match="does not fit ResNet: .*shape mismatch"):
        rflens.load_model(f"resnet18={path}")  # 1000 classes
    with pytest.raises(RFLensError, match="holds weights only|checkpoint of weights"):
        rflens.load_model(str(path))


def test_pickled_whole_model_needs_trust(tmp_path):
    torch.save(nn.Sequential(nn.Conv2d(1, 1, 5)), tmp_path / "whole.pt")
    with pytest.raises(RFLensError, match="trust_checkpoint=True"):
        rflens.load_model(str(tmp_path / "whole.pt"))
    model = rflens.load_model(str(tmp_path / "whole.pt"), trust_checkpoint=True)
    assert rflens.analyze(model, (1, 9, 9))["output"].rf_size == (5, 5)


# --- timm: one model per family -----------------------------------------------------------------

TIMM = {
    # name: (input size, layer, rf (of the local field where global), stride, global)
    "resnet10t": ((3, 64, 64), "layer4", 199, 32, False),
    "efficientnet_b0": ((3, 64, 64), "blocks.2", 67, 8, True),  # squeeze-excitation
    "convnext_atto": ((3, 64, 64), "stages.1", 152, 8, False),
    "regnetx_002": ((3, 64, 64), "s2", 15, 8, False),
    "mobilenetv3_small_050": ((3, 64, 64), "blocks.2", 191, 16, True),
    "vit_tiny_patch16_224": ((3, 32, 32), "blocks.0", 16, 16, True),  # attention: global, local = one patch
}


@pytest.mark.parametrize("name", TIMM)
def test_timm_families_on_meta_and_against_the_oracle(name, exact):
    size, layer, rf, stride, is_global = TIMM[name]
    kwargs = {"img_size": size[1]} if name.startswith("vit") else {}
    a = rflens.analyze(rflens.load_model(f"timm:{name}", kwargs), size)
    got = a[layer].local if a[layer].is_global and a[layer].local is not None else a[layer]
    assert (got.rf_size, got.stride, a[layer].is_global) == ((rf, rf), (stride, stride), is_global)
    torch.manual_seed(0)
    exact(rflens.load_model(f"timm:{name}", kwargs, device="cpu"), size, layers=[layer], analysis=a)


def test_timm_never_downloads():
    with pytest.raises(RFLensError, match="never downloads"):
        rflens.load_model("timm:resnet18", {"pretrained": True})
    with pytest.raises(RFLensError, match="unknown timm model 'resnet1'.*resnet18"):
        rflens.load_model("timm:resnet1")


# --- several inputs and outputs --------------------------------------------------------------

class Masked(nn.Module):
    """A forward with a second input and a dict of outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x, mask):
        y = self.pool(self.conv(x) * mask)
        return {"map": y, "score": y.mean((2, 3))}


def test_adapt_chooses_the_output_and_fills_extra_inputs(exact):
    net = Masked()
    with pytest.raises(RFLensError, match="--model-input"):
        rflens.analyze(net, (3, 16, 16))
    both = rflens.analyze(rflens.adapt(net, extra_inputs=[(1, 14, 14)]), (3, 16, 16))
    assert both.layers[-2:] == ["output['map']", "output['score']"]
    with pytest.raises(LayerNotFoundError, match=r"'output' is not one tensor here but 2: output\['map'\], "
                                                 r"output\['score'\].*--model-output"):
        both["output"]
    one = rflens.analyze(rflens.adapt(net, output="map", extra_inputs={"mask": (1, 14, 14)}), (3, 16, 16))
    assert (one["output"].rf_size, one["output"].stride) == ((4, 4), (2, 2))
    assert one["output"].unit((3, 3)).box == ((6, 10), (6, 10))
    with pytest.raises(RFLensError, match="no output 'boxes'; it returns a dict with 'map' \\(1x4x7x7\\), "
                                          "'score' \\(1x4\\)"):
        rflens.analyze(rflens.adapt(net, output="boxes", extra_inputs=[(1, 14, 14)]), (3, 16, 16))
    adapted = rflens.adapt(net, output=0, extra_inputs=[torch.ones(1, 14, 14)])
    exact(adapted, (3, 16, 16))
    assert "_rflens_extra_0" not in dict(net.named_buffers())  # the model itself is unchanged
    g = rflens.gradient_field(adapted, "output", (3, 3), input=torch.rand(3, 16, 16))
    assert g.nonzero.sum() <= 16 and not g.outside.any()


def test_cli_model_output_and_input(tmp_path, capsys):
    (tmp_path / "masked.py").write_text("from test_sources import Masked\n")
    spec = f"{tmp_path / 'masked.py'}:Masked"
    base = ["unit", spec, "--input-size", "3x16x16", "--unit", "3,3", "--format", "json"]
    assert main([*base, "--layer", "output", "--model-output", "map", "--model-input", "mask=1x14x14"]) == 0
    assert json.loads(capsys.readouterr().out)["box"] == [[6, 10], [6, 10]]
    assert main([*base, "--layer", "output", "--model-input", "1x14x14"]) == 2
    assert "--model-output KEY_OR_INDEX" in capsys.readouterr().err
    # MTCNN's ONet returns a tuple: its outputs are chosen by index
    onet = f"{Path(__file__).parent / 'trained.py'}:trained_onet"
    assert main(["unit", onet, "--input-size", "3x48x48", "--layer", "output", "--model-output", "1",
                 "--format", "json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["global"] is True and rec["rf_size"] == [49, 49] and rec["support_size"] == 48 * 48


# --- the CLI and the API agree, source by source ----------------------------------------------

def _sources(tmp_path) -> dict[str, tuple[str, tuple[int, ...]]]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, dilation=2))
    (tmp_path / "net.py").write_text("from torch import nn\n\ndef build(width=4):\n    return nn.Sequential("
                                     "nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), "
                                     "nn.Conv2d(width, 4, 3, dilation=2))\n")
    save_file(net.state_dict(), tmp_path / "net.safetensors")
    torch.save(net.state_dict(), tmp_path / "net.pth")
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    export_onnx(net, (3, 32, 32), tmp_path / "net.onnx")
    callable_ = f"{tmp_path / 'net.py'}:build"
    return {
        "torchvision": ("alexnet", (3, 224, 224)),
        "timm": ("timm:resnet10t", (3, 64, 64)),
        "callable": (callable_, (3, 32, 32)),
        "safetensors": (f"{callable_}={tmp_path / 'net.safetensors'}", (3, 32, 32)),
        "state dict": (f"{callable_}={tmp_path / 'net.pth'}", (3, 32, 32)),
        "torchscript": (str(tmp_path / "net.pt"), (3, 32, 32)),
        "onnx": (str(tmp_path / "net.onnx"), (3, 32, 32)),
    }


def test_cli_and_api_give_the_same_fields_for_every_source(tmp_path, capsys):
    for kind, (spec, size) in _sources(tmp_path).items():
        code = main(["table", spec, "--input-size", "x".join(map(str, size)), "--format", "json"])
        out, err = capsys.readouterr()
        assert code == 0, (kind, err)
        assert json.loads(out) == rflens.analyze(rflens.load_model(spec), size).table(), kind


def test_a_constructor_that_runs_its_own_forward_is_built_on_the_cpu():
    """torchvision's SSDs run the backbone while being built to learn its channel counts: that
    cannot happen on meta parameters, so the model is built with real (random) weights."""
    model = rflens.load_model("ssdlite320_mobilenet_v3_large")
    assert next(model.parameters()).device.type == "cpu"
    assert rflens.load_model("resnet18").fc.weight.device.type == "meta"  # the others stay on meta
