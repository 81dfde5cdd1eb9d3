"""The architecture zoo: analytic masks equal gradient-oracle masks on real torchvision models.

The full zoo is marked ``slow`` (run with ``pytest -m slow``; CI runs it); two small models
run by default."""

from __future__ import annotations

import pytest

from conftest import assert_exact
from rflens.models import load_model

ZOO = [
    ("alexnet", (3, 224, 224)),
    ("vgg11_bn", (3, 128, 128)),
    ("resnet50", (3, 160, 160)),
    ("resnext50_32x4d", (3, 128, 128)),
    ("wide_resnet50_2", (3, 128, 128)),
    ("densenet121", (3, 128, 128)),
    ("googlenet", (3, 160, 160)),
    ("inception_v3", (3, 299, 299)),
    ("squeezenet1_1", (3, 160, 160)),
    ("shufflenet_v2_x0_5", (3, 160, 160)),
    ("mobilenet_v2", (3, 160, 160)),
    ("mobilenet_v3_large", (3, 160, 160)),
    ("mnasnet0_5", (3, 160, 160)),
    ("efficientnet_b0", (3, 160, 160)),
    ("regnet_y_400mf", (3, 160, 160)),
    ("convnext_tiny", (3, 128, 128)),
    ("fcn_resnet50", (3, 96, 96)),
    ("deeplabv3_resnet50", (3, 96, 96)),
    ("lraspp_mobilenet_v3_large", (3, 128, 128)),
    ("r3d_18", (3, 8, 64, 64)),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,size", ZOO, ids=[z[0] for z in ZOO])
def test_zoo_matches_the_gradient_oracle(name, size):
    assert_exact(load_model(name, device="cpu"), size, max_layers=12)


@pytest.mark.parametrize("name,size", [("resnet18", (3, 64, 64)), ("squeezenet1_0", (3, 96, 96))])
def test_small_real_models_match_the_gradient_oracle(name, size):
    assert_exact(load_model(name, device="cpu"), size, max_layers=10)
