"""Scans and empirical RFs on a Ray cluster give the single-process answer, bit for bit.

One local Ray cluster (2 CPUs, no dashboard) serves the whole test session, as Ray advises:
starting one takes seconds, and each Ray run a few more to start its actors (new processes
that import torch), so the Ctrl-C, resume and CLI tests are marked slow.  Every test that
uses the cluster (``ray_cluster`` in conftest.py) is in this file, and ``make test`` runs with
``--dist loadfile``, so a run starts one cluster, on one worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_occlusion import assert_interrupted_run_resumes, small_cnn
from trained import lfw_folder, trained_onet, weights_file

import rflens
from rflens.cli import main

needs_mtcnn = pytest.mark.skipif(weights_file() is None, reason="facenet-pytorch not installed (make setup)")
ONET = (3, 48, 48), (0.5, 0.5)  # ONet's input size and normalisation (pixels as (x * 255 - 127.5) / 128)
SCAN_FIELDS = ("scores", "images", "where", "tail")


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """12 LFW faces as PNGs and a corrupt file after them."""
    return lfw_folder(tmp_path_factory.mktemp("faces"), 12)


@pytest.fixture(scope="module")
def images():
    return torch.rand(10, 3, 40, 40, generator=torch.Generator().manual_seed(3))


def assert_same_scan(got: rflens.Scan, want: rflens.Scan) -> None:
    for name in SCAN_FIELDS:
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (got.seen, got.skipped, got.names, got.config) == (want.seen, want.skipped, want.names, want.config)


@needs_mtcnn
def test_a_ray_scan_of_a_face_folder_equals_the_single_process_scan_bit_for_bit(ray_cluster, faces):
    net = trained_onet()
    size, normalize = ONET
    # batches of 5 over 13 files: the broken one is skipped inside the last batch, on an actor
    here = rflens.top_images(net, "pool2", faces, 3, input_size=size, normalize=normalize, batch_size=5, device="cpu")
    there = rflens.top_images(net, "pool2", faces, 3, input_size=size, normalize=normalize, batch_size=5,
                              device="cpu", executor=rflens.RayExecutor(actors=2))
    assert_same_scan(there, here)
    assert (there.seen, len(there.skipped), there.tail.shape) == (12, 1, (64, 7))  # 0.5% of 13 x 10 x 10 positions
    assert there.skipped[0][0] == str(faces / "zz_broken.png") and "cannot read" in there.skipped[0][1]
    assert there.threshold(5) == here.threshold(5)


@needs_mtcnn
def test_ray_empirical_rfs_of_onet_equal_the_single_process_ones(ray_cluster, faces):
    net = trained_onet()
    size, normalize = ONET
    scan = rflens.top_images(net, "pool2", faces, 3, input_size=size, normalize=normalize, device="cpu")
    common = dict(scan=scan, k=3, occluder=rflens.Occluder(5, 4), normalize=normalize, device="cpu")
    here = rflens.empirical_field(net, "pool2", [0, 1, 2], **common)
    there = rflens.empirical_field(net, "pool2", [0, 1, 2], **common, executor=rflens.RayExecutor(actors=2))
    assert there.to_dict() == here.to_dict()
    assert there.theoretical == (13, 13)
    for c in (0, 1, 2):
        np.testing.assert_array_equal(there.fields[c].heat, here.fields[c].heat)
        for a, b in zip(there.fields[c].maps, here.fields[c].maps):
            np.testing.assert_array_equal(a.drops, b.drops)


@pytest.mark.slow
def test_an_empirical_rf_interrupted_on_ray_resumes_on_ray_to_the_single_process_maps(ray_cluster, images, tmp_path):
    assert_interrupted_run_resumes(images, tmp_path, executor="ray")


class DiesOnce(torch.utils.data.Dataset):
    """``images`` as a dataset, except that reading one in a process other than the one that made
    it (a Ray actor) kills that process, once per ``marker`` file: a worker lost mid-job."""

    def __init__(self, images: torch.Tensor, marker: str):
        self.images, self.marker, self.home = images, marker, os.getpid()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        if os.getpid() != self.home and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.images[i]


def test_a_ray_worker_killed_mid_scan_is_restarted_and_the_scan_is_unchanged(ray_cluster, images, tmp_path):
    net = small_cnn()
    here = rflens.top_images(net, "4", images, k=3, batch_size=4, device="cpu")
    dies = DiesOnce(images, str(tmp_path / "died"))
    there = rflens.top_images(net, "4", dies, k=3, batch_size=4, device="cpu", executor=rflens.RayExecutor(actors=1),
                              out=tmp_path / "scan")
    assert (tmp_path / "died").exists()  # the actor's process was killed reading its first input
    assert_same_scan(there, replace(here, config={**here.config, "source": there.config["source"]}))
    assert sorted(os.listdir(tmp_path / "scan")) == ["scan.npz"]


@pytest.mark.slow
def test_ctrl_c_during_a_ray_scan_leaves_a_checkpoint_the_next_run_completes(ray_cluster, images, tmp_path):
    net = small_cnn()
    here = rflens.top_images(net, "4", images, k=3, batch_size=4, device="cpu")

    def interrupt(done, total):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        rflens.top_images(net, "4", images, k=3, batch_size=4, device="cpu", executor="ray", out=tmp_path,
                          progress=interrupt)
    assert sorted(os.listdir(tmp_path)) == ["scan.partial.npz"]  # the first 4 inputs, no half-made scan.npz
    with np.load(tmp_path / "scan.partial.npz") as partial:
        assert json.loads(str(partial["__record__"]))["consumed"] == 4
    resumed = rflens.top_images(net, "4", images, k=3, batch_size=4, device="cpu", executor="ray", out=tmp_path)
    assert_same_scan(resumed, here)
    assert sorted(os.listdir(tmp_path)) == ["scan.npz"]


@needs_mtcnn
@pytest.mark.slow
def test_rflens_scan_and_empirical_with_ray_print_what_they_print_without(ray_cluster, faces, tmp_path, capsys):
    onet = f"{os.path.join(os.path.dirname(__file__), 'trained.py')}:trained_onet"
    flags = ["--input-size", "3x48x48", "--normalize", "0.5,0.5", "--format", "json"]
    scan = ["scan", onet, "--layer", "pool2", "--images", str(faces), "--top-k", "2", "--batch-size", "4", *flags]
    assert main([*scan, "--out", str(tmp_path / "here")]) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*scan, "--out", str(tmp_path / "there"), "--ray", "--actors", "2"]) == 0
    there = json.loads(capsys.readouterr().out)
    assert {**there, "scan": ""} == {**here, "scan": ""} and (there["seen"], there["skipped"]) == (12, 1)
    assert_same_scan(rflens.Scan.load(tmp_path / "there"), rflens.Scan.load(tmp_path / "here"))

    occlude = ["empirical", onet, "--layer", "pool2", "--scan", str(tmp_path / "here"), "--units", "0,1",
               "--occluder", "5", "--stride", "4", *flags, "-o", str(tmp_path / "emp.png")]
    assert main(occlude) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*occlude, "--ray"]) == 0
    there = json.loads(capsys.readouterr().out)
    assert there == here and there["theoretical_size"] == [13, 13]


def test_without_ray_the_ray_executor_says_how_to_install_it(monkeypatch, images, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where it is missing
    with pytest.raises(rflens.RFLensError, match=r"pip install 'rflens\[ray\]'"):
        rflens.top_images(small_cnn(), "4", images, k=2, device="cpu", executor="ray")
    (tmp_path / "faces").mkdir()
    lfw_folder(tmp_path / "faces", 2)
    code = main(["scan", "resnet18", "--layer", "layer1", "--images", str(tmp_path / "faces"), "--input-size",
                 "3x32x32", "--ray", "--out", str(tmp_path / "scan")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'rflens[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "scan").exists()


def test_an_executor_other_than_local_or_ray_is_refused(images):
    with pytest.raises(rflens.RFLensError, match="executor must be 'local', 'ray' or a RayExecutor, not 'dask'"):
        rflens.top_images(small_cnn(), "4", images, k=2, device="cpu", executor="dask")


def test_importing_rflens_does_not_import_ray():
    code = "import sys, rflens, rflens.cli; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
