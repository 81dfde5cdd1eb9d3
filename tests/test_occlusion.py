"""Top-image scans and the empirical RF of Zhou et al. (2015), against the naive procedure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import rflens
from rflens.methods.occlusion import _hits

from trained import lfw_faces, trained_onet, weights_file


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()).eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(12, 3, 40, 40, generator=torch.Generator().manual_seed(1))


# -- scans ------------------------------------------------------------------------------------

def test_scan_finds_each_channels_top_images_and_where_they_peak(images):
    net = small_cnn()
    scan = rflens.top_images(net, "4", images, k=3, device="cpu", batch_size=5)
    with torch.no_grad():
        a = net(images)  # (12, 8, 10, 10)
    peak = a.flatten(2).max(2).values.T  # (channels, images)
    best = torch.topk(peak, 3, dim=1)
    assert scan.scores.shape == (8, 3)
    np.testing.assert_allclose(scan.scores, best.values.numpy(), rtol=1e-6)
    assert (scan.images == best.indices.numpy()).all()
    for c in range(8):
        for t in scan.top(c):
            assert a[t.index, c][t.where] == a[t.index, c].max()


def test_scan_threshold_is_the_exact_top_half_percent_of_all_activations(images):
    net = small_cnn()
    scan = rflens.top_images(net, "4", images, k=3, device="cpu", batch_size=5)
    with torch.no_grad():
        values = net(images)[:, 2].flatten()
    m = math.ceil(0.005 * values.numel())  # 12 images x 100 positions -> the 6th largest
    assert m == 6
    assert scan.threshold(2) == pytest.approx(float(values.sort(descending=True).values[m - 1]), rel=1e-6)


def test_shards_merge_to_the_same_scan(images):
    net = small_cnn()
    whole = rflens.top_images(net, "4", images, k=4, device="cpu", batch_size=4)
    parts = [rflens.top_images(net, "4", images, k=4, device="cpu", batch_size=4, shard=(i, 3)) for i in range(3)]
    merged = parts[2].merge(parts[0]).merge(parts[1])
    assert merged.seen == whole.seen == 12
    assert (merged.images == whole.images).all() and (merged.where == whole.where).all()
    np.testing.assert_array_equal(merged.scores, whole.scores)
    np.testing.assert_array_equal(merged.tail, whole.tail)


def test_an_interrupted_scan_resumes_with_identical_results(images, tmp_path):
    net = small_cnn()
    whole = rflens.top_images(net, "4", images, k=4, device="cpu", batch_size=4)
    calls = []

    def kill_after_first_batch(done, total):
        calls.append(done)
        if len(calls) == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        rflens.top_images(net, "4", images, k=4, device="cpu", batch_size=4, out=tmp_path,
                          progress=kill_after_first_batch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.partial.npz"]  # no half result
    resumed = rflens.top_images(net, "4", images, k=4, device="cpu", batch_size=4, out=tmp_path,
                                progress=kill_after_first_batch)
    assert calls == [4, 8, 12]  # the second run started after the first batch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.npz"]
    for got in (resumed, rflens.Scan.load(tmp_path)):
        np.testing.assert_array_equal(got.scores, whole.scores)
        np.testing.assert_array_equal(got.images, whole.images)
        np.testing.assert_array_equal(got.tail, whole.tail)


def test_unreadable_files_are_skipped_counted_and_listed(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    (tmp_path / "notes.txt").write_text("hello")
    scan = rflens.top_images(small_cnn(), "4", tmp_path, k=2, input_size=(3, 32, 32), device="cpu")
    assert scan.seen == 3
    assert sorted(n.rsplit("/", 1)[-1] for n, _ in scan.skipped) == ["broken.jpg", "notes.txt"]


# -- the empirical RF -------------------------------------------------------------------------

def test_fast_crop_and_full_procedures_equal_the_naive_one(images):
    net = small_cnn()
    occluder = rflens.Occluder(5, 5, "random", seed=3)
    scan = rflens.top_images(net, "4", images, k=2, device="cpu")
    got = {m: rflens.empirical_field(net, "4", [0, 5], images, scan=scan, k=2, occluder=occluder, device="cpu",
                                     method=m, discrepancy="drop") for m in ("fast", "crop", "full", "naive")}
    for c in (0, 5):
        for fast, crop, full, naive in zip(*(got[m].fields[c].maps for m in ("fast", "crop", "full", "naive"))):
            scale = np.abs(naive.drops).max()
            assert scale > 0
            for other in (fast, crop, full):
                np.testing.assert_allclose(other.drops, naive.drops, atol=1e-5 * scale)
            np.testing.assert_allclose(fast.heat, naive.heat, atol=1e-5 * scale)
    assert got["fast"].fallback == "" and got["fast"].cropped == 0  # incremental inference, no crops
    assert got["crop"].cropped > 0  # the crop path really worked on crops


def test_occluders_outside_the_exact_rf_change_nothing_in_the_naive_procedure(images):
    net = small_cnn()
    occluder = rflens.Occluder(3, 4, "random")
    res = rflens.empirical_field(net, "4", [1], images, k=2, occluder=occluder, device="cpu", method="naive")
    for m in res.fields[1].maps:
        ys, xs = occluder.grid((40, 40))
        outside = ~_hits(m.rf.mask, occluder, ys, xs)
        assert outside.sum() > 0
        assert (m.drops[outside] == 0).all()


def test_a_linear_box_unit_maps_exactly_its_receptive_field_centred_on_the_canvas():
    # one 5x5 all-ones conv, 1x1 zero occluders on an all-ones image: occluding pixel q drops
    # the unit by 1 exactly when q is in its RF, so the map is the RF square
    conv = nn.Conv2d(1, 1, 5, bias=False)
    nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 16, 16)
    res = rflens.empirical_field(conv, "output", [0], x, k=1, occluder=rflens.Occluder(1, 1, "zeros"),
                                 device="cpu")
    f = res.fields[0]
    (m,) = f.maps
    assert m.image.where == (0, 0) and m.activation == 25.0
    (y0, y1), (x0, x1) = m.rf.box
    expected = np.zeros((16, 16))
    expected[y0:y1, x0:x1] = 1.0
    np.testing.assert_allclose(m.heat, expected)
    # on the (32, 32) canvas the RF (5 wide, centre on a pixel) sits at 14..18 around 16
    assert f.heat.shape == (32, 32)
    assert np.argwhere(f.heat > 0).min(0).tolist() == [14, 14]
    assert np.argwhere(f.heat > 0).max(0).tolist() == [18, 18]
    assert f.size == 5


def test_bad_settings_get_clear_messages(images):
    net = small_cnn()
    with pytest.raises(rflens.RFLensError, match="fill must be one of"):
        rflens.Occluder(5, 3, "noise")
    with pytest.raises(rflens.RFLensError, match="does not fit"):
        rflens.empirical_field(net, "4", [0], images, occluder=rflens.Occluder(50, 3), device="cpu")
    with pytest.raises(rflens.UnitError, match="8 channels"):
        rflens.empirical_field(net, "4", [8], images, device="cpu")
    with pytest.raises(rflens.RFLensError, match="discrepancy must be"):
        rflens.empirical_field(net, "4", [0], images, discrepancy="max", device="cpu")


needs_mtcnn = pytest.mark.skipif(weights_file() is None, reason="facenet-pytorch not installed (make setup)")


@needs_mtcnn
def test_trained_onet_fast_path_equals_naive_on_real_faces():
    net = trained_onet()
    faces = lfw_faces(20)
    occluder = rflens.Occluder(5, 6, "random")
    res = {m: rflens.empirical_field(net, "pool2", [3, 40], faces, k=2, occluder=occluder, device="cpu", method=m)
           for m in ("fast", "naive")}
    for c in (3, 40):
        for fast, naive in zip(res["fast"].fields[c].maps, res["naive"].fields[c].maps):
            np.testing.assert_allclose(fast.drops, naive.drops, atol=1e-5 * np.abs(naive.drops).max())


@needs_mtcnn
@pytest.mark.slow
def test_on_trained_onet_the_empirical_rf_is_smaller_than_the_theoretical_and_the_gap_grows_with_depth():
    """Measured (16 units, 5 top faces of 100, 5x5 random occluders, stride 1, 90% mass):
    pool2 13.0 vs 13, pool3 22.4 vs 25, prelu4 29.8 vs 33 (the map includes the occluder's
    4-pixel overhang, which is why shallow layers come out at or above their theoretical size)."""
    net = trained_onet()
    faces = lfw_faces(100)
    occluder = rflens.Occluder(5, 1, "random")
    ratio = {}
    for layer in ("pool2", "pool3", "prelu4"):
        res = rflens.empirical_field(net, layer, range(16), faces, k=5, occluder=occluder, device="cpu")
        ratio[layer] = res.sizes.mean() / res.theoretical[0]
    assert ratio["pool3"] < 1 and ratio["prelu4"] < 1
    assert ratio["pool2"] > ratio["pool3"] >= ratio["prelu4"] - 0.02


def assert_interrupted_run_resumes(images, tmp_path, executor=None) -> None:
    """Ctrl-C after the first image leaves a checkpoint; the rerun skips that image (its
    progress starts at 1 done) and gives the uninterrupted run's maps; another channel list is
    refused.  ``executor`` runs both interrupted and resumed runs (Ray: test_ray.py)."""
    net = small_cnn()
    occluder = rflens.Occluder(5, 3, "random")
    scan = rflens.top_images(net, "4", images, k=2, device="cpu")
    whole = rflens.empirical_field(net, "4", [0, 1, 2], images, scan=scan, k=2, occluder=occluder, device="cpu")
    calls = []

    def kill_after_first_image(done, total):
        calls.append((done, total))
        if len(calls) == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        rflens.empirical_field(net, "4", [0, 1, 2], images, scan=scan, k=2, occluder=occluder, device="cpu",
                               checkpoint=tmp_path / "occ.npz", progress=kill_after_first_image, executor=executor)
    resumed = rflens.empirical_field(net, "4", [0, 1, 2], images, scan=scan, k=2, occluder=occluder, device="cpu",
                                     checkpoint=tmp_path / "occ.npz", progress=kill_after_first_image,
                                     executor=executor)
    total = calls[0][1]
    assert [d for d, _ in calls] == [1] + list(range(1, total + 1))
    for c in (0, 1, 2):
        np.testing.assert_array_equal(resumed.fields[c].heat, whole.fields[c].heat)
    with pytest.raises(rflens.RFLensError, match="other settings"):
        rflens.empirical_field(net, "4", [0, 1], images, scan=scan, k=2, occluder=occluder, device="cpu",
                               checkpoint=tmp_path / "occ.npz")


def test_an_interrupted_empirical_run_resumes_without_redoing_images(images, tmp_path):
    assert_interrupted_run_resumes(images, tmp_path)


class _Excite(nn.Module):
    """Squeeze-and-excitation: each channel scaled by a function of the whole map."""

    def __init__(self, c: int):
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(self.pool(x)))


def test_a_layer_behind_an_op_incremental_inference_does_not_know_falls_back_to_crops(images):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), _Excite(4), nn.Conv2d(4, 4, 3)).eval()
    occluder = rflens.Occluder(5, 5, "random", seed=3)
    got = {m: rflens.empirical_field(net, "3", [0, 1], images, k=2, occluder=occluder, device="cpu", method=m)
           for m in ("fast", "naive")}
    assert got["fast"].fallback == "'2.pool' (AdaptiveAvgPool2d): AdaptiveAvgPool2d is not a windowed op this engine knows"
    for c in (0, 1):
        for fast, naive in zip(got["fast"].fields[c].maps, got["naive"].fields[c].maps):
            np.testing.assert_allclose(fast.drops, naive.drops, atol=1e-5 * np.abs(naive.drops).max())
