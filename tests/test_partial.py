"""Partial analysis: an op whose reads depend on tensor values (a detector's top-k, indexing by a
mask, sampling at computed positions) refuses the layers that depend on it, and only those; every
other layer keeps its exact field, checked against the gradient oracle."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from conftest import assert_exact
from torch import nn
from torchvision.models import detection

import rflens
from rflens.cli import main
from rflens.models import load_model

TOPK = ("rflens cannot compute the receptive field through op 'topk' in the model's forward (which elements "
        "it reads depends on tensor values). Use method='probe' (CLI: --method probe) for the brute-force "
        "gradient answer.")


class TopKBranch(nn.Module):
    """A stem feeding a top-k of scores and, after it, a convolution."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.score = nn.Conv2d(4, 1, 1)
        self.conv = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        y = self.stem(x)
        best = self.score(y).flatten(1).topk(5).values
        return self.conv(y), best * 2


def test_only_the_layers_downstream_of_a_top_k_are_refused():
    a = rflens.analyze(TopKBranch(), (1, 12, 12))
    refused = [n for n in a.layers if a[n].refused]
    assert refused == ["topk[0]", "topk[1]", "getattr", "mul", "output[1]"]
    assert all(a[n].refused == TOPK for n in refused)
    # computed after the top-k, the convolution branch keeps its field
    assert a["stem"].rf_size == (3, 3) and a["conv"].rf_size == (5, 5) and a["output[0]"].rf_size == (5, 5)
    assert a["conv"].unit((0, 0)).box == ((0, 5), (0, 5))
    assert_exact(TopKBranch(), (1, 12, 12), layers=["stem", "score"])


def test_a_refused_layer_answers_every_field_query_with_the_refusal():
    layer = rflens.analyze(TopKBranch(), (1, 12, 12))["output[1]"]
    assert layer.output_shape == (1, 5) and repr(layer) == "<Layer 'output[1]' output out=[1, 5] refused at topk>"
    for query in (lambda: layer.unit("center"), lambda: layer.projective_field((3, 3)), lambda: layer.rf_size,
                  lambda: layer.stride, lambda: layer.is_global, lambda: layer.covers_input):
        with pytest.raises(rflens.UnsupportedOpError) as e:
            query()
        assert str(e.value) == TOPK and e.value.op == "topk"
    row = layer.to_dict()
    assert row["refused"] == {"op": "topk", "module": "", "message": TOPK}
    assert row["rf_size"] is None and row["stride"] is None and row["global"] is None
    assert rflens.analyze(TopKBranch(), (1, 12, 12))["conv"].to_dict()["refused"] is None


class PickedThenConv(nn.Module):
    """Indexing by a mask (its result's size depends on values), then a convolution of the stem."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3)
        self.conv = nn.Conv2d(2, 2, 3)

    def forward(self, x):
        y = self.stem(x)
        picked = y[y > 0]
        return self.conv(y), picked


def test_after_a_size_that_depends_on_values_every_later_layer_is_refused():
    """The trace goes on as if the mask picked nothing; later shapes may come from that made-up
    size, so every later layer is refused (with the indexing named), and its shape is unknown."""
    a = rflens.analyze(PickedThenConv(), (1, 9, 9))
    assert a["stem"].rf_size == (3, 3) and a["gt"].refused is None
    assert [n for n in a.layers if a[n].refused] == ["getitem", "conv", "output[0]", "output[1]"]
    assert a["conv"].output_shape is None and a["getitem"].to_dict()["output_shape"] is None
    assert a["conv"].refusal.op == "index.Tensor"
    assert "its result's shape depends on tensor values" in a["conv"].refused


class ReadsAValue(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) if y.sum() > 0 else y


def test_a_branch_on_a_value_stops_the_trace_keeping_what_came_before():
    a = rflens.analyze(ReadsAValue(), (1, 16, 16))
    assert a.layers == ["input", "a", "output"] and a["a"].rf_size == (3, 3)
    assert a["output"].output_shape is None
    with pytest.raises(rflens.UnsupportedOpError, match=r"'_local_scalar_dense'.*reads its value.*stops there"):
        a["output"].unit()


class FirstTopK(nn.Module):
    def forward(self, x):
        return x.topk(3).values


def test_a_model_whose_first_op_is_refused_has_only_its_input_followed():
    a = rflens.analyze(nn.Sequential(FirstTopK(), nn.Flatten()), (1, 6, 6))
    assert [n for n in a.layers if not a[n].refused] == ["x"] and a["x"].rf_size == (1, 1)
    assert all(a[n].refused for n in ("0", "1", "output"))


def test_a_model_that_is_entirely_followed_has_no_refused_layer():
    a = rflens.analyze(torchvision.models.resnet18(), (3, 64, 64))
    assert not any(row["refused"] for row in a.table())


# -- real detectors: the backbone, FPN and heads keep their fields ---------------------------------

SMALL = {"min_size": 128, "max_size": 128}
DETECTORS = [  # name, constructor arguments, the refused op and its module, the first refused layer
    ("fasterrcnn_mobilenet_v3_large_320_fpn", SMALL, "topk", "rpn", "rpn"),
    ("fasterrcnn_resnet50_fpn", SMALL, "topk", "rpn", "rpn"),
    ("maskrcnn_resnet50_fpn", SMALL, "topk", "rpn", "rpn"),
    ("keypointrcnn_resnet50_fpn", SMALL, "topk", "rpn", "rpn"),
    ("retinanet_resnet50_fpn", SMALL, "index.Tensor", "", "output[0]['boxes']"),
    ("fcos_resnet50_fpn", SMALL, "index.Tensor", "", "output[0]['boxes']"),
    ("ssd300_vgg16", {}, "index.Tensor", "", "output[0]['boxes']"),
]


@pytest.mark.parametrize("name,kwargs,op,module,first", DETECTORS, ids=[d[0] for d in DETECTORS])
def test_a_detector_is_followed_up_to_its_value_dependent_selection(name, kwargs, op, module, first):
    a = rflens.analyze(load_model(name, kwargs), (3, 128, 128))
    refused = [n for n in a.layers if a[n].refused]
    assert refused[0] == first and {(a[n].refusal.op, a[n].refusal.module) for n in refused} == {(op, module)}
    assert a.layers.index(first) == len(a.layers) - len(refused)  # nothing after the refusal is followed
    # the detections are refused, every FPN level (and every head output before the selection) is not
    assert {"output[0]['boxes']", "output[0]['scores']", "output[0]['labels']"} <= set(refused)
    assert not any(a[n].refused for n in a.layers if n.startswith(("backbone[", "head[", "rpn.head[")))


def test_faster_rcnn_at_its_own_resolution():
    a = rflens.analyze(load_model("fasterrcnn_resnet50_fpn"), (3, 800, 800))
    level, pool = a["backbone['0']"], a["backbone['pool']"]
    assert (level.output_shape, level.rf_size, pool.output_shape, pool.rf_size, pool.stride) == (
        (1, 256, 200, 200), (459, 459), (1, 256, 13, 13), (491, 491), (64, 64))
    assert a["rpn.head[0][0]"].grid_shape == (200, 200) and a["rpn"].output_shape is None


def test_faster_rcnn_backbone_fpn_and_rpn_head_equal_the_oracle():
    det = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                          min_size=64, max_size=64)
    a = assert_exact(det, (3, 64, 64), layers=["backbone.body.1", "backbone.body.3", "backbone.fpn.layer_blocks.0",
                                                "rpn.head.cls_logits", "rpn.head.bbox_pred_1"])
    assert a["backbone.body.3"].rf_size == (19, 19) and a["rpn.head.cls_logits"].is_global
    with pytest.raises(rflens.UnsupportedOpError, match="'topk' in module 'rpn'"):
        a["output[0]['boxes']"].unit()


def test_analyze_leaves_no_meta_tensor_in_a_detector():
    """The anchor generator keeps its cell anchors on the device it last ran on: after the meta
    trace, the model still runs on real images."""
    det = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                          min_size=64, max_size=64).eval()
    rflens.analyze(det, (3, 64, 64))
    assert det.rpn.anchor_generator.cell_anchors[0].device.type == "cpu"
    with torch.no_grad():
        assert set(det(torch.rand(1, 3, 64, 64))[0]) == {"boxes", "labels", "scores"}


@pytest.mark.slow
@pytest.mark.parametrize("build,size,layers", [
    (lambda: detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, min_size=64, max_size=64),
     (3, 64, 64), ["backbone.body.layer1", "backbone.fpn.layer_blocks.0", "head.classification_head.cls_logits",
                   "head.regression_head.bbox_reg_2"]),
    (lambda: detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, min_size=64, max_size=64),
     (3, 64, 64), ["backbone.body.layer2", "head.classification_head.cls_logits_1",
                   "head.regression_head.bbox_ctrness_3"]),
    (lambda: detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None),
     (3, 96, 96), ["backbone.features.0.3", "head.regression_head.module_list.5"]),
], ids=["retinanet", "fcos", "ssdlite"])
def test_one_stage_detectors_equal_the_oracle_before_their_selection(build, size, layers):
    a = assert_exact(build(), size, layers=layers)
    assert a["output[0]['boxes']"].refusal.op == "index.Tensor"


def test_raft_is_followed_through_its_encoders_and_refused_from_its_first_lookup():
    raft = torchvision.models.optical_flow.raft_small(weights=None)
    a = rflens.analyze(rflens.adapt(raft, extra_inputs=[(3, 128, 128)]), (3, 128, 128))
    refused = [n for n in a.layers if a[n].refused]
    assert refused[0] == "update_block.motion_encoder.convcorr1.0" and refused[-1] == "output[11]"
    assert a["output[0]"].refusal.op == "grid_sampler_2d"
    # the encoders' fields are those of the encoders alone
    alone = rflens.analyze(raft.feature_encoder, (3, 128, 128))["output"]
    inside = a["feature_encoder"]
    # instance norms make them global; past the grid their conv paths' lattice goes on into the
    # padding, so the unclipped size is 171 (133 when the hull left that continuation out)
    assert (inside.rf_size, inside.stride) == (alone.rf_size, alone.stride) == ((171, 171), (8, 8))
    assert inside.local_rf_size == alone.local_rf_size == (51, 51)
    assert (inside.unit((3, 5)).mask == alone.unit((3, 5)).mask).all()
    assert not a["context_encoder"].refused


# -- the table, in every format ------------------------------------------------------------------

DETECTOR = ["fasterrcnn_mobilenet_v3_large_320_fpn", "--model-arg", "min_size=64", "--model-arg", "max_size=64",
            "--input-size", "3x64x64"]


def test_the_table_flags_refused_layers_in_every_format(capsys):
    assert main(["table", *DETECTOR, "--format", "csv"]) == 0
    rows = {line.split(",")[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["rpn"] == "rpn,RegionProposalNetwork,?,,,,refused: topk in rpn"
    # MobileNet-V3's SE gates make it global: its local field is the convolution path's
    assert rows["rpn.head.cls_logits"] == "rpn.head.cls_logits,Conv2d,1x15x2x2,global (local 723),32,-361,covers input"
    assert main(["table", *DETECTOR, "--format", "json"]) == 0
    records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["output[0]['boxes']"]["refused"]["op"] == "topk" and records["output[0]['boxes']"]["rf_size"] is None
    assert records["backbone['0']"]["refused"] is None
    assert main(["table", *DETECTOR, "--format", "markdown"]) == 0
    assert "| rpn | RegionProposalNetwork | ? |  |  |  | refused: topk in rpn |" in capsys.readouterr().out
    assert main(["table", *DETECTOR]) == 0
    out = capsys.readouterr().out
    assert "refused: topk" in out and out.rstrip().endswith(
        "15 layers refused: " + TOPK.replace("the model's forward", "module 'rpn'"))


class ManyPieces(nn.Module):
    """A stem, then the sum of 70 diagonally shifted copies of it: 70 differently placed copies,
    past the engine's limit of 64."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.stem(x)
        h, w = y.shape[-2:]
        return sum(nn.functional.pad(y, (i, 0, i, 0))[..., :h, :w] for i in range(70))


def test_a_limit_reached_inside_an_op_refuses_only_what_depends_on_it():
    a = rflens.analyze(ManyPieces(), (1, 80, 80))
    assert a["stem"].refused is None and a["stem"].rf_size == (3, 3)
    assert a["output"].refused.startswith("rflens cannot compute the receptive field through op 'add.Tensor'")
    assert "(its output reads more than 64 differently placed copies of its inputs" in a["output"].refused
    with pytest.raises(rflens.UnsupportedOpError, match="more than 64 differently placed copies"):
        a["output"].unit((40, 40))
    assert_exact(ManyPieces(), (1, 80, 80), layers=["stem"])
