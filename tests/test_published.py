"""Published receptive-field figures, reproduced."""

from __future__ import annotations

import rflens
from rflens.models import load_model


def test_vgg16_pool5_is_212_with_stride_32():
    a = rflens.analyze(load_model("vgg16"), (3, 224, 224))
    assert a["features.30"].rf_size == (212, 212)
    assert a["features.30"].stride == (32, 32)


def test_resnet50_layer3_267_stride_16_and_layer4_427_stride_32():
    a = rflens.analyze(load_model("resnet50"), (3, 224, 224))
    assert (a["layer3"].rf_size, a["layer3"].stride) == ((267, 267), (16, 16))
    assert (a["layer4"].rf_size, a["layer4"].stride) == ((427, 427), (32, 32))
    # the shortest path (all shortcuts) is conv1 + maxpool: 7 + 2 * 2
    assert a["layer4"].min_rf == (11, 11)


def test_alexnet_matches_zhou_et_al_2015_table_1():
    # theoretical sizes in "Object Detectors Emerge in Deep Scene CNNs": 19, 67, 99, 131, 195
    a = rflens.analyze(load_model("alexnet"), (3, 227, 227))
    sizes = {n: a[n].rf_size[0] for n in ("features.2", "features.5", "features.7", "features.9", "features.12")}
    assert sizes == {"features.2": 19, "features.5": 67, "features.7": 99, "features.9": 131, "features.12": 195}


def test_vgg16_unit_7_7_of_conv5_3():
    a = rflens.analyze(load_model("vgg16"), (3, 224, 224))
    unit = a["features.29"].unit((7, 7))
    assert unit.box == ((22, 218), (22, 218))
    assert unit.support_size == 196 * 196
    corner = a["features.29"].unit((0, 0))
    assert corner.unclipped_box == ((-90, 106), (-90, 106)) and corner.box == ((0, 106), (0, 106))
