"""Bad input, case by case: one clear message, exit status 2, no traceback, no files left.

Each row is a command line, the fragment its message must hold, and (where the library has
the same call) the Python call that must raise an ``RFLensError`` with the same fragment.
Paths are written with ``{tmp}`` for the folder of test files made by ``files``.
"""

from __future__ import annotations

import os
import resource
import tracemalloc
import warnings

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import rflens
from rflens.models.checkpoints import load_weights
from rflens.cli import main
from rflens.errors import RFLensError
from rflens.viewer import Scene, export_html, serve

MODELS = '''
import torch
from torch import nn

def seq():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))

def linear():
    return nn.Sequential(nn.Linear(10, 5))

class Lstm(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]

def quantized_embedding():
    return nn.Sequential(nn.Conv2d(3, 3, 1), torch.ao.nn.quantized.Embedding(10, 3))

class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, mask):
        y = self.conv(x) * mask
        return {"map": y, "score": y.mean((2, 3))}

class Shifted(nn.Module):
    """Parallel 1x1 convolutions of the input shifted by (i, i): a field of diagonal pieces."""
    def __init__(self, n=70, conv=True):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(1, 1, 1) if conv else nn.Identity() for _ in range(n))

    def forward(self, x):
        h, w = x.shape[-2:]
        return sum(c(nn.functional.pad(x, (i, 0, i, 0))[..., :h, :w]) for i, c in enumerate(self.convs))

def shifted_copies():
    return Shifted(conv=False)

class TopK(nn.Module):
    def forward(self, x):
        return x.flatten(1).topk(3).values

def top_k():
    return nn.Sequential(nn.Conv2d(1, 1, 3), TopK())

class FailsOnData(nn.Module):
    """Traces on meta tensors, then raises on real ones, as a model with a data check would."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.device.type != "meta":
            raise RuntimeError("boom")
        return y
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "nets.py").write_text(MODELS)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "photo.png")
    (tmp_path / "photo.pth").write_bytes((tmp_path / "photo.png").read_bytes())
    (tmp_path / "notes.onnx").write_text("this is not a model\n")
    (tmp_path / "notes.pt").write_text("this is not a model\n")
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "empty.onnx").write_bytes(b"")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    save_file(net.state_dict(), tmp_path / "seq.safetensors")
    torch.save(net.state_dict(), tmp_path / "seq.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 3, 16, 16),), str(tmp_path / "seq.onnx"), dynamo=False,
                          opset_version=17)
    for name in ("seq.safetensors", "seq.pth", "seq.onnx"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
    nan = {k: v.clone() for k, v in net.state_dict().items()}
    nan["0.weight"][0, 0, 0, 0] = float("nan")
    save_file(nan, tmp_path / "nan.safetensors")
    (tmp_path / "out").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.png").write_text("not a picture\n")
    (tmp_path / "texts" / "b.txt").write_text("not a picture either\n")
    return tmp_path


def _nets(tmp):
    return f"{tmp}/nets.py"


# id, argv, message fragment, the same through the API (or None where only the CLI has it)
CASES = [
    ("missing model file", ["table", "{tmp}/absent.onnx"], "no model file at '{tmp}/absent.onnx'",
     lambda t: rflens.load_model(f"{t}/absent.onnx")),
    ("missing weights", ["grad", "{tmp}/nets.py:seq", "--layer", "2", "--unit", "1,1", "--input-size", "3x8x8",
                         "--weights", "{tmp}/absent.pth", "-o", "{tmp}/out/g.png"],
     "no weights file at '{tmp}/absent.pth'", lambda t: load_weights(nn.Conv2d(1, 1, 1), f"{t}/absent.pth")),
    ("missing weights after =", ["table", "{tmp}/nets.py:seq={tmp}/absent.safetensors"], "no weights file at",
     lambda t: rflens.load_model(f"{_nets(t)}:seq={t}/absent.safetensors")),
    ("missing folder of a callable", ["table", "{tmp}/nope/net.py:build"], "no Python file at",
     lambda t: rflens.load_model(f"{t}/nope/net.py:build")),
    ("empty weights", ["table", "{tmp}/nets.py:seq={tmp}/empty.pth"], "is empty (0 bytes)",
     lambda t: rflens.load_model(f"{_nets(t)}:seq={t}/empty.pth")),
    ("empty onnx", ["table", "{tmp}/empty.onnx"], "is empty (0 bytes)",
     lambda t: rflens.load_model(f"{t}/empty.onnx")),
    ("truncated safetensors", ["table", "{tmp}/nets.py:seq={tmp}/cut_seq.safetensors"],
     "damaged or truncated safetensors file", lambda t: rflens.load_model(f"{_nets(t)}:seq={t}/cut_seq.safetensors")),
    ("truncated state dict", ["table", "{tmp}/nets.py:seq={tmp}/cut_seq.pth"], "truncated or corrupt",
     lambda t: rflens.load_model(f"{_nets(t)}:seq={t}/cut_seq.pth")),
    ("truncated onnx", ["table", "{tmp}/cut_seq.onnx"], "not a valid ONNX file",
     lambda t: rflens.load_model(f"{t}/cut_seq.onnx")),
    ("PNG as weights", ["table", "{tmp}/nets.py:seq={tmp}/photo.pth"], "not a weights file but a PNG image",
     lambda t: rflens.load_model(f"{_nets(t)}:seq={t}/photo.pth")),
    ("PNG as --weights", ["grad", "{tmp}/nets.py:seq", "--layer", "2", "--unit", "1,1", "--input-size", "3x8x8",
                          "--weights", "{tmp}/photo.png", "-o", "{tmp}/out/g.png"],
     "not a weights file but a PNG image", lambda t: load_weights(nn.Conv2d(1, 1, 1), f"{t}/photo.png")),
    ("text as onnx", ["table", "{tmp}/notes.onnx"], "not a valid ONNX file",
     lambda t: rflens.load_model(f"{t}/notes.onnx")),
    ("text as model file", ["table", "{tmp}/notes.pt"], "not a model file but a text file",
     lambda t: rflens.load_model(f"{t}/notes.pt")),
    ("state dict as model", ["table", "{tmp}/seq.pth"], "name the architecture too, as ARCH=",
     lambda t: rflens.load_model(f"{t}/seq.pth")),
    ("architecture mismatch", ["table", "resnet18={tmp}/seq.safetensors"],
     "does not fit ResNet: 122 missing keys", lambda t: rflens.load_model(f"resnet18={t}/seq.safetensors")),
    ("weights twice", ["grad", "{tmp}/nets.py:seq={tmp}/seq.pth", "--layer", "2", "--unit", "1,1", "--input-size",
                       "3x8x8", "--weights", "{tmp}/seq.pth", "-o", "{tmp}/out/g.png"], "already holds weights", None),
    ("unknown model", ["table", "resnet51"], "unknown model 'resnet51'", lambda t: rflens.load_model("resnet51")),
    ("unknown timm model", ["table", "timm:resnet51"], "unknown timm model 'resnet51'. Did you mean: resnet51q, resnet50",
     lambda t: rflens.load_model("timm:resnet51")),
    ("unknown trained model", ["table", "trained:alexnet"],
     "unknown trained model 'alexnet': rflens has efficientnet_lite0, hed, mobilenet_v2, vgg16_hed",
     lambda t: rflens.load_model("trained:alexnet")),
    ("unknown layer", ["show", "resnet18", "--layer", "layer5", "-o", "{tmp}/out/u.png"],
     "no layer named 'layer5' in this model. Did you mean: layer4",
     lambda t: rflens.analyze(rflens.load_model("resnet18"), (3, 224, 224))["layer5"]),
    ("unit outside the grid", ["unit", "alexnet", "--layer", "features.12", "--unit", "9,9"],
     "unit (9, 9) is outside layer 'features.12', whose grid is (6, 6)",
     lambda t: rflens.analyze(rflens.load_model("alexnet"), (3, 224, 224))["features.12"].unit((9, 9))),
    ("unit of the wrong rank", ["unit", "alexnet", "--layer", "features.12", "--unit", "1,2,3"],
     "has a 2-D grid (6, 6); got the 3-D unit (1, 2, 3)",
     lambda t: rflens.analyze(rflens.load_model("alexnet"), (3, 224, 224))["features.12"].unit((1, 2, 3))),
    ("input too small", ["grid", "alexnet", "--input-size", "3x16x16", "--unit", "0,0", "-o", "{tmp}/out/g.png"],
     "the input is too small for this model", lambda t: rflens.analyze(rflens.load_model("alexnet"), (3, 16, 16))),
    ("input of the wrong rank", ["table", "resnet18", "--input-size", "3x64"], "check its rank and size",
     lambda t: rflens.analyze(rflens.load_model("resnet18"), (3, 64))),
    ("a field of more pieces than the engine holds",
     ["unit", "{tmp}/nets.py:Shifted", "--input-size", "1x80x80", "--layer", "output"],
     "through op 'add.Tensor' in the model's forward (the receptive field is a union of more than 64 separable "
     "pieces). Use method='probe'", lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:Shifted"), (1, 80, 80))["output"].unit()),
    ("more placed copies than the engine holds",
     ["unit", "{tmp}/nets.py:shifted_copies", "--input-size", "1x80x80", "--layer", "output"],
     "(its output reads more than 64 differently placed copies of its inputs (as window attention over reshaped "
     "windows does)). Use method='probe'",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:shifted_copies"), (1, 80, 80))["output"].unit()),
    ("a layer after a value-dependent op", ["unit", "{tmp}/nets.py:top_k", "--input-size", "1x8x8", "--layer", "1"],
     "through op 'topk' in module '1' (which elements it reads depends on tensor values). Use method='probe'",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:top_k"), (1, 8, 8))["1"].unit()),
    ("input size not a size", ["table", "resnet18", "--input-size", "3xbig"], "is not of the form CxHxW",
     lambda t: rflens.analyze(rflens.load_model("resnet18"), "3xbig")),
    ("input of too many dims", ["table", "resnet18", "--input-size", "3x4x4x4x4"], "1, 2 or 3 spatial dims",
     lambda t: rflens.analyze(rflens.load_model("resnet18"), (3, 4, 4, 4, 4))),
    ("linear-only model", ["table", "{tmp}/nets.py:linear", "--input-size", "3x8x8"], "no spatial receptive field",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:linear"), (3, 8, 8))),
    ("LSTM model", ["table", "{tmp}/nets.py:Lstm", "--input-size", "3x8"], "input.size(-1) must be equal to input_size",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:Lstm"), (3, 8))),
    ("quantized module without a float twin", ["table", "{tmp}/nets.py:quantized_embedding", "--input-size", "3x8x8"],
     "module '1' is a torch.ao.nn.quantized.modules.embedding_ops.Embedding, a quantized module rflens has no float twin",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:quantized_embedding"), (3, 8, 8))),
    ("second input missing", ["table", "{tmp}/nets.py:TwoInputs", "--input-size", "3x8x8"], "--model-input",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:TwoInputs"), (3, 8, 8))),
    ("dict output named as one", ["unit", "{tmp}/nets.py:TwoInputs", "--input-size", "3x8x8", "--model-input",
                                  "1x6x6", "--layer", "output"],
     "'output' is not one tensor here but 2: output['map'], output['score']",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:TwoInputs", extra_inputs=[(1, 6, 6)]),
                              (3, 8, 8))["output"]),
    ("unknown output key", ["table", "{tmp}/nets.py:TwoInputs", "--input-size", "3x8x8", "--model-input",
                            "1x6x6", "--model-output", "boxes"], "no output 'boxes'; it returns a dict with 'map'",
     lambda t: rflens.analyze(rflens.load_model(f"{_nets(t)}:TwoInputs", output="boxes",
                                                extra_inputs=[(1, 6, 6)]), (3, 8, 8))),
    ("bad extra input", ["table", "{tmp}/nets.py:TwoInputs", "--model-input", "1xsix"], "--model-input '1xsix'", None),
    ("NaN weights, gradient", ["grad", "{tmp}/nets.py:seq={tmp}/nan.safetensors", "--layer", "2", "--unit", "1,1",
                               "--input-size", "3x8x8", "-o", "{tmp}/out/g.png"],
     "weights hold NaN or Inf values (in 0.weight)",
     lambda t: rflens.gradient_field(rflens.load_model(f"{_nets(t)}:seq={t}/nan.safetensors", device="cpu"),
                                     "2", (1, 1), input_size=(3, 8, 8))),
    ("NaN weights, effective RF", ["erf", "{tmp}/nets.py:seq", "--weights", "{tmp}/nan.safetensors", "--layer", "2",
                                   "--input-size", "3x8x8", "--noise", "2", "-o", "{tmp}/out/e.png"],
     "weights hold NaN or Inf values",
     lambda t: rflens.effective_field(rflens.load_model(f"{_nets(t)}:seq={t}/nan.safetensors", device="cpu"),
                                      "2", inputs=2, input_size=(3, 8, 8))),
    ("picture into a file's folder", ["show", "alexnet", "--layer", "features.12", "-o", "{tmp}/photo.png/rf.png"],
     "cannot write '{tmp}/photo.png/rf.png': '{tmp}/photo.png' is a file, not a folder",
     lambda t: _save_figure(f"{t}/photo.png/rf.png")),
    ("picture on a drive that does not exist", ["grid", "alexnet", "--unit", "1,1", "-o", "Q:/grid.png"],
     "cannot write 'Q:/grid.png': folder 'Q:' does not exist", lambda t: _save_figure("Q:/grid.png")),
    ("mask into a file's folder", ["unit", "alexnet", "--layer", "features.12", "--mask-out", "{tmp}/photo.png/m.npy"],
     "cannot write '{tmp}/photo.png/m.npy': '{tmp}/photo.png' is a file, not a folder", None),
    ("static page into a file's folder", ["view", "{tmp}/nets.py:seq", "--input-size", "3x8x8", "--html",
                                         "{tmp}/photo.png/view.html"],
     "cannot write '{tmp}/photo.png/view.html': '{tmp}/photo.png' is a file, not a folder",
     lambda t: export_html(Scene(rflens.load_model(f"{_nets(t)}:seq"), (3, 8, 8)), f"{t}/photo.png/view.html")),
    ("scan into a file's folder", ["scan", "{tmp}/nets.py:seq", "--layer", "2", "--input-size", "3x8x8", "--images",
                                   "{tmp}", "--out", "{tmp}/photo.png/scan"],
     "cannot make '{tmp}/photo.png/scan': '{tmp}/photo.png' is a file, not a folder", None),
    ("no Ray actors", ["scan", "{tmp}/nets.py:seq", "--layer", "2", "--input-size", "3x8x8", "--images", "{tmp}",
                       "--ray", "--actors", "0"], "actors 0: must be at least 1",
     lambda t: rflens.RayExecutor(actors=0)),
    ("Ray actors without Ray", ["empirical", "{tmp}/nets.py:seq", "--layer", "2", "--input-size", "3x8x8",
                                "--images", "{tmp}", "--actors", "2"], "--actors needs --ray", None),
    ("ERF checkpoint into a file's folder", ["erf", "{tmp}/nets.py:seq", "--layer", "2", "--input-size", "3x8x8",
                                             "--noise", "2", "--checkpoint", "{tmp}/photo.png/erf.npz"],
     "cannot write '{tmp}/photo.png/erf.npz': '{tmp}/photo.png' is a file, not a folder", None),
    ("scan of a folder without one image", ["scan", "{tmp}/nets.py:seq", "--layer", "2", "--input-size", "3x8x8",
                                            "--images", "{tmp}/texts", "--out", "{tmp}/out/scan"],
     "nothing was scanned: all 2 of the images in {tmp}/texts were skipped (cannot read '{tmp}/texts/a.png' as an "
     "image (not a format Pillow knows); cannot read '{tmp}/texts/b.txt'",
     lambda t: rflens.top_images(rflens.load_model(f"{_nets(t)}:seq", device="cpu"), "2", f"{t}/texts",
                                 input_size=(3, 8, 8), device="cpu")),
    ("overlay unit outside the grid", ["overlay", "alexnet", "--image", "{tmp}/photo.png", "--layers", "features.12",
                                       "--units", "99:99", "-o", "{tmp}/out/o.png"],
     "unit (99, 99) is outside layer 'features.12', whose grid is (6, 6)",
     lambda t: _overlay(t, ["features.12"], "99:99")),
    ("overlay of no layer", ["overlay", "alexnet", "--image", "{tmp}/photo.png", "--layers", "", "-o",
                             "{tmp}/out/o.png"], "names no layer", lambda t: _overlay(t, [], "center")),
    ("negative unit", ["unit", "alexnet", "--layer", "features.12", "--unit", "-1,3"],
     "unit (-1, 3) is outside layer 'features.12': indices are 0-based from the first unit, never negative (not "
     "counted from the end); its grid is (6, 6), whose last unit is (5, 5)",
     lambda t: rflens.analyze(rflens.load_model("alexnet"), (3, 224, 224))["features.12"].unit((-1, 3))),
    ("negative unit to show", ["show", "alexnet", "--layer", "features.12", "--unit", "-1,-1", "-o", "{tmp}/out/s.png"],
     "unit (-1, -1) is outside layer 'features.12': indices are 0-based from the first unit, never negative", None),
    ("negative unit on a photograph", ["overlay", "alexnet", "--image", "{tmp}/photo.png", "--layers", "features.12",
                                       "--units", "center,-1:3", "-o", "{tmp}/out/o.png"],
     "unit (-1, 3) is outside layer 'features.12': indices are 0-based from the first unit, never negative",
     lambda t: _overlay(t, ["features.12"], "-1:3")),
    ("negative port", ["view", "{tmp}/nets.py:seq", "--input-size", "3x8x8", "--port", "-1"],
     "-1 is not a port number: use 0 to 65535 (0: any free one)",
     lambda t: serve(Scene(rflens.load_model(f"{_nets(t)}:seq"), (3, 8, 8)), port=-1)),
    ("port above 65535", ["view", "{tmp}/nets.py:seq", "--input-size", "3x8x8", "--port", "70000"],
     "70000 is not a port number: use 0 to 65535",
     lambda t: serve(Scene(rflens.load_model(f"{_nets(t)}:seq"), (3, 8, 8)), port=70000)),
    ("model fails on real data", ["grad", "{tmp}/nets.py:FailsOnData", "--layer", "output", "--unit", "1,1",
                                  "--input-size", "3x8x8", "-o", "{tmp}/out/g.png"],
     "the model failed when run on a batch of shape (1, 3, 8, 8): RuntimeError: boom",
     lambda t: rflens.gradient_field(rflens.load_model(f"{_nets(t)}:FailsOnData", device="cpu"), "output", (1, 1),
                                     input_size=(3, 8, 8))),
]


def _overlay(tmp, layers: list[str], units: str):
    from rflens.methods import load_image
    from rflens.plot import overlay_figure
    a = rflens.analyze(rflens.load_model("alexnet"), (3, 224, 224))
    return overlay_figure(a, load_image(f"{tmp}/photo.png", (224, 224)), layers, units)


def _save_figure(path: str):
    from matplotlib.figure import Figure

    from rflens.plot import save
    return save(Figure(), path)


@pytest.mark.parametrize("argv,fragment,api", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_one_clear_message(argv, fragment, api, files, capsys):
    tmp = str(files)
    code = main([a.replace("{tmp}", tmp) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("rflens: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert fragment.replace("{tmp}", tmp) in err
    assert not os.listdir(files / "out")  # nothing written, not even a part file
    if api is not None:
        with pytest.raises(RFLensError) as raised:
            api(files)
        assert fragment.replace("{tmp}", tmp) in str(raised.value)


def test_unreadable_weights_file(files, capsys):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    (files / "seq.pth").chmod(0)
    assert main(["table", f"{files}/nets.py:seq={files}/seq.pth"]) == 2
    assert "Permission denied" in capsys.readouterr().err


def test_internal_errors_exit_1_with_a_hint(files, capsys):
    """An exception raised inside rflens' own code is a bug: status 1, a short request to report
    it, no traceback.  (This model hands rflens' layout code a value it never receives from the
    engine, so the failure's innermost frame is rflens'.)"""
    (files / "buggy.py").write_text(
        "from torch import nn\nfrom rflens.engine.layout import compact\n\n"
        "class Buggy(nn.Module):\n"
        "    def forward(self, x):\n"
        "        compact(None)\n"
        "        return x\n")
    code = main(["table", f"{files}/buggy.py:Buggy", "--input-size", "1x8x8"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.startswith("rflens: internal error: ") and "This is a bug in rflens; please report it" in err


def test_huge_model_is_analysed_without_its_memory():
    """RegNetY-128GF holds 645M weights (2.6 GB as float32); built and analysed on the meta
    device it costs a few percent of that."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        model = rflens.load_model("regnet_y_128gf")
        a = rflens.analyze(model, (3, 64, 64))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    assert size > 2.5e9 and a["trunk_output"].stride == (32, 32)
    assert peak < size / 20
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before < size / 8


def test_a_table_that_needs_more_memory_than_there_is_is_refused_before_it_is_allocated(monkeypatch, capsys):
    """At 3x20000x20000 a table of ResNet-50 was killed by the kernel at 18.9 GB.  Here the machine
    is made to have 100 MiB: the per-unit boxes of ResNet-18's input layer at 2048x2048 need 320
    MiB, and are refused, saying both numbers and the way out, before they are allocated."""
    monkeypatch.setattr("rflens.engine.memory.available", lambda: 100 << 20)
    message = ("every unit's box in layer 'x' (4,194,304 units, grid 2048x2048) would need about 320.0 MiB "
               "of memory, and 100.0 MiB is available: use a smaller input size (CLI: --input-size), about "
               "3x1024x1024 or smaller")
    tracemalloc.start()
    try:
        code = main(["table", "resnet18", "--input-size", "3x2048x2048"])
        with pytest.raises(rflens.TooLargeError) as raised:
            rflens.analyze(rflens.load_model("resnet18"), (3, 2048, 2048)).table()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2 and err == f"rflens: error: {message}\n"
    assert str(raised.value) == message and isinstance(raised.value, MemoryError)
    assert peak < 100 << 20


def test_an_input_whose_geometry_cannot_fit_is_refused_before_the_trace(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("rflens.engine.memory.available", lambda: 16 << 30)
    message = ("the geometry of a 3x200000x200000 input would need about 298.0 GiB of memory, and 16.0 GiB is "
               "available: use a smaller input size (CLI: --input-size), about 3x41696x41696 or smaller")
    assert main(["show", "resnet50", "--layer", "layer4", "--input-size", "3x200000x200000", "-o",
                 str(tmp_path / "rf.png")]) == 2
    assert capsys.readouterr().err == f"rflens: error: {message}\n"
    with pytest.raises(rflens.TooLargeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rflens.analyze(rflens.load_model("resnet50"), (3, 200000, 200000))


def test_one_units_box_reads_its_own_rows_not_the_whole_grids():
    """`show ... 3x20000x20000` failed allocating a 29 GiB bool array: every unit's rows of the
    dependency matrices at once (units x input length).  ResNet-18's conv1 at 1024x1024 took 512 MiB
    that way; its boxes are now found from each row's first and last pixel."""
    a = rflens.analyze(rflens.load_model("resnet18"), (3, 1024, 1024))
    tracemalloc.start()
    try:
        layer = a["conv1"]
        unit, covers = layer.unit((3, 3)), layer.covers_input
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert unit.box == ((3, 10), (3, 10)) and unit.unclipped_box == ((3, 10), (3, 10)) and covers == (False, False)
    assert layer.unit((0, 0)).box == ((0, 4), (0, 4)) and layer.unit((0, 0)).unclipped_box == ((-3, 4), (-3, 4))
    assert peak < 64 << 20


def test_a_table_at_1024_pixels_a_side_is_not_refused():
    rows = {r["name"]: r for r in rflens.analyze(rflens.load_model("resnet18"), (3, 1024, 1024)).table()}
    assert rows["conv1"]["rf_size"] == [7, 7] and rows["fc"]["rf_size"] == [1427, 1427]


def test_a_documented_limit_is_an_rflens_error_and_the_probe_is_the_way_out(files):
    """GeometryError and LayoutError are limits of the analytic engine, not bugs: RFLensErrors
    that say how to get the answer, and the probe does answer."""
    import numpy as np

    from rflens.engine.geometry import simplify
    from rflens.errors import GeometryError, LayoutError, LimitError
    assert issubclass(GeometryError, LimitError) and issubclass(LayoutError, LimitError)
    assert issubclass(LimitError, RFLensError)
    diagonal = [(np.eye(1, 80, i, dtype=bool), np.eye(1, 80, i, dtype=bool)) for i in range(70)]
    with pytest.raises(GeometryError, match=r"^the receptive field is a union of more than 64 separable pieces\. "
                                            r"Use method='probe' \(CLI: --method probe\)"):
        simplify(diagonal)
    assert len(simplify(diagonal[:64])) == 64
    shifted = rflens.load_model(f"{_nets(files)}:Shifted")
    mask = rflens.analyze(shifted, (1, 80, 80), method="probe")["output"].unit((40, 40)).mask
    assert mask.sum() == 41 and all(mask[40 - i, 40 - i] for i in range(41))
