"""Genuinely trained networks and real photographs that work offline.

* MTCNN's ONet (Zhang et al. 2016, the face-landmark stage) and RNet (the refinement stage) with the trained weights that the
  facenet-pytorch wheel ships (``make setup`` installs it without its pinned dependencies; we
  define the architecture here and load the weights with ``weights_only`` loading);
* faces from scikit-image's ``lfw_subset`` (Labeled Faces in the Wild, 25x25 grey crops),
  brought to ONet's 48x48 RGB input with MTCNN's own normalisation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class ONet(nn.Module):
    """MTCNN's output network: 48x48 face crop -> face score, box, landmarks."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).contiguous().flatten(1)))
        return torch.softmax(self.dense6_1(x), dim=1), self.dense6_2(x), self.dense6_3(x)


class RNet(nn.Module):
    """MTCNN's refinement network: 24x24 face crop -> face score, box."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).contiguous().view(x.shape[0], -1)))
        return self.softmax5_1(self.dense5_1(x)), self.dense5_2(x)


def weights_file(name: str = "onet") -> Path | None:
    """Path of facenet-pytorch's trained weights, found without importing the package."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{name}.pt"
    return path if path.exists() else None


def _trained(net: nn.Module, name: str) -> nn.Module:
    from rflens.models.checkpoints import load_weights
    path = weights_file(name)
    if path is None:
        raise FileNotFoundError("facenet-pytorch is not installed: run `make setup`")
    load_weights(net, path)
    return net.eval()


def trained_onet() -> ONet:
    return _trained(ONet(), "onet")


def trained_rnet() -> RNet:
    return _trained(RNet(), "rnet")


def lfw_faces(n: int = 100, size: int = 48) -> torch.Tensor:
    """The first ``n`` (<= 100) faces of ``lfw_subset`` as ONet inputs (n, 3, size, size)."""
    from skimage.data import lfw_subset
    faces = torch.from_numpy(lfw_subset()[:n]).float()[:, None]  # grey in [0, 1]
    faces = F.interpolate(faces, size=(size, size), mode="bilinear", align_corners=False)
    return ((faces * 255 - 127.5) * 0.0078125).expand(-1, 3, -1, -1).contiguous()


def lfw_folder(folder: Path, n: int = 30) -> Path:
    """The first ``n`` faces of ``lfw_subset`` as 25x25 grey PNGs in ``folder`` (``face000.png``,
    ...), with a corrupt file after them (``zz_broken.png``): a folder to scan."""
    import numpy as np
    from PIL import Image
    from skimage.data import lfw_subset
    for i, face in enumerate(lfw_subset()[:n]):
        Image.fromarray((face * 255).round().astype(np.uint8)).save(folder / f"face{i:03d}.png")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    return folder
