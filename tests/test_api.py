"""The analysis object: names, per-axis geometry, global context, projective fields, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import rflens
from rflens.models import load_model


@pytest.fixture(scope="module")
def resnet18():
    return rflens.analyze(load_model("resnet18"), (3, 64, 64))


def test_layers_carry_module_names_and_get_graph_node_names(resnet18):
    names = set(resnet18.layers)
    assert {"conv1", "layer1", "layer1.0", "layer4.1.conv2", "layer1.0.add", "layer1.0.relu_1", "flatten", "fc"} <= names


def test_inception_concatenations_are_named():
    a = rflens.analyze(load_model("inception_v3"), (3, 299, 299))
    assert "Mixed_5b.cat" in a.layers and "Mixed_7c.cat_2" in a.layers
    assert a["Mixed_6e"].rf_size == a["Mixed_6e.cat"].rf_size


def test_models_fx_cannot_trace_fall_back_to_module_names():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else self.b(x)  # data-dependent: FX cannot trace

    class Shape(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            for _ in range(x.shape[-1] // 8):  # shape-dependent loop: fine on meta tensors
                x = self.a(x)
            return x

    a = rflens.analyze(Shape(), (1, 16, 16))
    assert a.layers == ["input", "a", "a_1", "output"] and a["a_1"].rf_size == (5, 5)
    # the branch reads a value: the trace stops there, keeping the input and refusing the output
    branch = rflens.analyze(ShapeBranch(), (1, 16, 16))
    assert branch.layers == ["input", "output"] and branch["output"].output_shape is None
    with pytest.raises(rflens.UnsupportedOpError, match=r"reads its value.*stops there.*method='probe'"):
        branch["output"].unit()


def test_per_axis_geometry_of_a_strided_conv():
    a = rflens.analyze(nn.Sequential(nn.Conv2d(1, 1, (3, 7), stride=(2, 3), padding=(1, 3))), (1, 20, 30))
    layer = a["0"]
    assert layer.rf_size == (3, 7) and layer.stride == (2, 3) and layer.start == (-1, -3)
    assert layer.center == (0, 0) and layer.uniform
    unit = layer.unit((4, 5))
    assert unit.unclipped_box == ((7, 10), (12, 19)) and unit.center == (8, 15)


def test_unproductive_layers_cover_the_input():
    a = rflens.analyze(load_model("vgg16"), (3, 64, 64))
    assert a["features.30"].covers_input == (True, True)
    assert a["features.9"].covers_input == (False, False)


def test_squeeze_excitation_layers_are_global_and_local_field_ignores_the_gates():
    model = load_model("mobilenet_v3_small")
    a = rflens.analyze(model, (3, 96, 96))
    from torchvision.ops import SqueezeExcitation
    for _, m in list(model.named_modules()):
        for child_name, child in list(m.named_children()):
            if isinstance(child, SqueezeExcitation):
                setattr(m, child_name, nn.Identity())
    plain = rflens.analyze(model, (3, 96, 96))
    layer = a["features.1"]
    assert layer.is_global and "SqueezeExcitation" not in layer.global_via[0] or "avgpool" in layer.global_via[0]
    assert not a["features.0"].is_global
    for name in ("features.1", "features.4", "features.9"):
        assert a[name].is_global
        assert a[name].local.rf_size == plain[name].rf_size
        assert np.array_equal(a[name].local.unit((1, 2)).mask, plain[name].unit((1, 2)).mask)


def test_projective_field_is_the_inverse_of_the_unit_masks(resnet18):
    layer = resnet18["layer1"]
    masks = {u: layer.unit(u).mask for u in np.ndindex(*layer.grid_shape)}
    for pixel in [(0, 0), (31, 40), (63, 63), (5, 60)]:
        expected = np.zeros(layer.grid_shape, bool)
        for u, m in masks.items():
            expected[u] = m[pixel]
        assert np.array_equal(layer.projective_field(pixel), expected)
    box = layer.projective_field(box=((10, 20), (30, 34)))
    assert box.sum() > layer.projective_field((10, 30)).sum()


def test_analysis_leaves_a_real_model_untouched_and_needs_no_memory():
    model = load_model("resnet18", device="cpu").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rflens.analyze(model, (3, 64, 64))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) and v.device.type == "cpu" for k, v in model.state_dict().items())
    # a model on the meta device has no data at all, so nothing can have been computed
    big = load_model("regnet_y_128gf")
    assert all(p.device.type == "meta" for p in big.parameters())
    assert rflens.analyze(big, (3, 224, 224))["trunk_output"].stride == (32, 32)


def test_analyze_runs_while_other_threads_run_the_model_and_analyze_it():
    """The trace runs on a meta copy: a forward pass in another thread (real weights) never sees a
    meta parameter, and two analyses at once (torch.fx patches nn.Module process-wide while it
    traces) both succeed."""
    model = load_model("resnet18", device="cpu").eval()
    tensors = list(model.parameters()) + list(model.buffers())
    x = torch.randn(1, 3, 64, 64)
    stop = threading.Event()
    failures: list[str] = []
    forwards = [0]

    def run_forwards():
        with torch.no_grad():
            while not stop.is_set():
                if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
                    failures.append("a parameter was a meta tensor")
                try:
                    model(x)
                except Exception as e:  # noqa: BLE001 - collected for the assertion
                    failures.append(f"forward: {type(e).__name__}: {e}")
                forwards[0] += 1

    def run_analyses():
        try:
            for _ in range(4):
                assert rflens.analyze(model, (3, 64, 64))["layer4"].rf_size == (435, 435)
        except Exception as e:  # noqa: BLE001
            failures.append(f"analyze: {type(e).__name__}: {e}")

    runner = threading.Thread(target=run_forwards)
    runner.start()
    analysts = [threading.Thread(target=run_analyses) for _ in range(2)]
    try:
        for t in analysts:
            t.start()
        for t in analysts:
            t.join()
    finally:
        stop.set()
        runner.join()
    assert forwards[0] > 0 and failures == []
    assert all(a is b for a, b in zip(tensors, list(model.parameters()) + list(model.buffers())))
    assert nn.Module.__call__ is _MODULE_CALL  # no tracer's patch left behind


_MODULE_CALL = nn.Module.__call__


def test_analyze_leaves_tied_weights_hooks_and_attributes_of_the_module_alone():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv1d(4, 4, 3, padding=1), nn.Conv1d(4, 4, 3, padding=1)
            self.b.weight = self.a.weight
            self.register_buffer("index", torch.arange(8))
            self.table = torch.ones(8)            # a plain tensor attribute
            self.cache: list = []

        def forward(self, x):
            self.cache.append(1)
            self.table = self.table.to(x.device)  # stored by the forward, as detectors do
            return self.b(self.a(x)) + self.table[self.index]

    model = Tied()
    before = dict(vars(model))
    for fx_names in (True, False):
        assert rflens.analyze(model, (4, 8), fx_names=fx_names)["output"].rf_size == (5,)
    assert vars(model) == before and model.cache == [] and model.table.device.type == "cpu"
    assert not model._forward_hooks and not model.a._forward_pre_hooks
    # what was traced: new modules, meta weights tied as in the model, integer buffers' values
    from rflens.engine.metacopy import meta_copy
    twin = meta_copy(model)
    assert twin.a is not model.a and twin.a.weight.is_meta and twin.a.weight is twin.b.weight
    assert isinstance(twin.a.weight, nn.Parameter) and not model.a.weight.is_meta
    assert twin.index is not model.index and twin.index.tolist() == list(range(8))
    assert twin.table is model.table and twin.cache is not model.cache


def test_unknown_layer_suggests_close_names(resnet18):
    with pytest.raises(rflens.LayerNotFoundError, match="layer1.0.conv1"):
        resnet18["layer1.0.conv"]


def test_unit_outside_the_grid_names_the_grid(resnet18):
    with pytest.raises(rflens.UnitError, match=r"\(8, 8\)"):
        resnet18["layer2"].unit((8, 0))
    with pytest.raises(rflens.UnitError, match="2-D grid"):
        resnet18["layer2"].unit((1,))


def test_an_input_too_small_names_the_layer_that_collapses():
    with pytest.raises(rflens.InputTooSmallError, match="features"):
        rflens.analyze(load_model("alexnet"), (3, 32, 32))


@pytest.mark.parametrize("bad", ["3x", (3,), (3, 0, 8), (3, 8, 8, 8, 8), "axb"])
def test_bad_input_sizes_are_refused(bad):
    with pytest.raises(rflens.RFLensError):
        rflens.analyze(nn.Conv2d(3, 1, 1), bad)


@pytest.mark.parametrize("name,size", [("resnet50", 64), ("inception_v3", 299), ("efficientnet_b0", 64),
                                       ("convnext_tiny", 64)])
def test_every_graph_node_name_of_torchvision_is_a_layer(name, size):
    from torchvision.models.feature_extraction import get_graph_node_names
    model = load_model(name)
    _, eval_names = get_graph_node_names(model.eval())
    a = rflens.analyze(model, (3, size, size))
    from rflens.engine.trace import fx_graph
    _, node_names, _ = fx_graph(model)
    kinds = {name: (node.op, str(node.target)) for node, name in node_names.items()}
    missing = [n for n in eval_names if n not in a]
    # parameters and shape arithmetic do not depend on the input: they have no receptive field
    assert all(kinds[n][0] == "get_attr" or any(s in kinds[n][1] for s in ("size", "getattr", "_assert", "eq"))
               for n in missing), [(n, kinds[n]) for n in missing]
    assert len(missing) < len(eval_names) / 4


def test_vision_transformer_tokens_are_global_through_attention_and_local_to_their_patch():
    a = rflens.analyze(load_model("vit_b_16"), (3, 224, 224))
    block = a["encoder.layers.encoder_layer_0"]
    assert block.grid_shape == (197,) and block.is_global and "attention" in block.global_via[0]
    assert block.local.rf_size == (16, 16)
    # token 1 is the first patch (token 0 is the class token, which sees everything only globally)
    assert block.local.unit((1,)).box == ((0, 16), (0, 16))
    assert block.unit((0,)).support_size == 224 * 224


def test_window_attention_is_followed_not_refused():
    # refused until window attention had nodes of its own (tests/test_windows.py checks it exactly)
    a = rflens.analyze(load_model("swin_t"), (3, 224, 224))
    assert a["features.1"].grid_shape == (56, 56) and not a["features.1"].is_global


def test_global_layers_give_the_local_field_of_what_the_global_op_reads():
    """Issue 17: ResNet-18's avgpool said RF 627, stride 224 at 224 (the union of the boxes its
    one unit reads); its local field is layer4's, the units the global pooling reads."""
    a = rflens.analyze(load_model("resnet18"), (3, 224, 224))
    assert a["layer4"].rf_size == (435, 435) and a["layer4"].local_rf_size is None
    for name in ("avgpool", "flatten", "fc", "output"):
        layer = a[name]
        assert layer.is_global and layer.rf_size == (627, 627) and layer.local is None
        assert (layer.local_rf_size, layer.local_stride, layer.local_start) == ((435, 435), (32, 32), (-217, -217))
    row = a["fc"].to_dict()
    assert (row["global"], row["rf_size"], row["local_rf_size"], row["local_stride"], row["local_start"]) == (
        True, [627, 627], [435, 435], [32, 32], [-217, -217])
    assert a["layer4"].to_dict()["local_stride"] is None
    vgg = rflens.analyze(load_model("vgg16"), (3, 224, 224))
    # a linear layer over the flattened positions is global too: its local field is features.30's
    assert vgg["classifier.0"].rf_size == (404, 404) and vgg["features.30"].rf_size == (212, 212)
    assert (vgg["classifier.0"].local_rf_size, vgg["classifier.0"].local_stride) == ((212, 212), (32, 32))


def test_global_layers_with_local_paths_take_the_larger_of_both_local_fields():
    """An SE gate beside the convolution path: the local field is at least the conv path's;
    ViT's tokens: their patch (attention reads the 16x16 patches)."""
    a = rflens.analyze(load_model("mobilenet_v3_small"), (3, 224, 224))
    layer = a["features.1"]
    assert layer.is_global and layer.local.rf_size == (7, 7) and layer.local_rf_size == (7, 7)
    assert layer.local_stride == layer.local.stride == (4, 4)
    # the whole hull holds the local one: past the grid the conv path's lattice goes on into the
    # padding while the gate's boxes stay put (rf_size was 227 here, under the local 383)
    deep = a["features.9"]
    assert (deep.rf_size, deep.local.rf_size, deep.local_rf_size) == ((575, 575), (383, 383), (383, 383))
    vit = rflens.analyze(load_model("vit_b_16"), (3, 224, 224))
    for name in ("encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_11", "heads"):
        assert vit[name].local_rf_size == (16, 16) and vit[name].local_stride == (16, 16)
