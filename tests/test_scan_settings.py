"""A scan's settings, checked by the library: counts, normalisation written as text, and the
folder ``rflens scan`` keeps a scan in (what it holds, resuming it, reading it back)."""

from __future__ import annotations

import json

import pytest
import torch

import rflens
from rflens.methods import ScanFolder, check_count, normalize_spec, parse_normalize

IMAGES = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Conv2d(1, 2, 3)


def scan_into(folder, model=None, **kwargs):
    return rflens.top_images(model or net(), "output", IMAGES, 2, device="cpu", out=folder, **kwargs)


# -- counts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,value,message", [
    ("k", 0, "k 0: must be at least 1"),
    ("limit", -3, "limit -3: must be at least 1"),
    ("--top-k", 0, "--top-k 0: must be at least 1"),
    ("--batch-size", 0, "--batch-size 0: must be at least 1"),
])
def test_a_count_below_one_is_refused_by_the_name_the_caller_gives_it(name, value, message):
    with pytest.raises(rflens.RFLensError) as e:
        check_count(name, value)
    assert str(e.value) == message


@pytest.mark.parametrize("value", [None, 1, 500])
def test_a_count_of_one_or_more_or_none_given_passes(value):
    check_count("k", value)


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "k 0: must be at least 1"),
    ({"limit": 0}, "limit 0: must be at least 1"),
    ({"batch_size": 0}, "batch_size 0: must be at least 1"),
])
def test_top_images_checks_its_counts_before_running_the_model(kwargs, message):
    with pytest.raises(rflens.RFLensError) as e:
        rflens.top_images(net(), "output", IMAGES, **{"k": 2, **kwargs}, device="cpu")
    assert str(e.value) == message


# -- normalisation as text ----------------------------------------------------------------------

@pytest.mark.parametrize("text,normalize", [
    (None, None),
    ("imagenet", None),
    (" ImageNet ", None),
    ("none", (0.0, 1.0)),
    ("0.5,0.5", (0.5, 0.5)),
    ("0.1,0.2,0.3,1,2,3", ((0.1, 0.2, 0.3), (1.0, 2.0, 3.0))),
])
def test_normalisation_text_becomes_what_normalize_takes(text, normalize):
    assert parse_normalize(text) == normalize


@pytest.mark.parametrize("text,name,message", [
    ("0.5", "normalize", "normalize '0.5': use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or M1,M2,M3,S1,S2,S3"),
    ("a,b", "--normalize", "--normalize 'a,b': use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or M1,M2,M3,S1,S2,S3"),
    ("1,2,3,4", "normalize", "normalize '1,2,3,4': use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or "
                             "M1,M2,M3,S1,S2,S3"),
    ("0.5,0", "--normalize", "--normalize '0.5,0': the standard deviation must be positive"),
    ("0,0,0,1,-1,1", "normalize", "normalize '0,0,0,1,-1,1': the standard deviation must be positive"),
])
def test_bad_normalisation_text_is_refused_by_the_name_the_caller_gives_it(text, name, message):
    with pytest.raises(rflens.RFLensError) as e:
        parse_normalize(text, name)
    assert str(e.value) == message


@pytest.mark.parametrize("text,spec", [("imagenet", "imagenet"), ("none", "0.0,1.0"), ("0.5,0.5", "0.5,0.5"),
                                       ("0.1,0.2,0.3,1,2,3", "0.1,0.2,0.3,1.0,2.0,3.0")])
def test_normalize_spec_writes_the_text_that_reads_back_the_same(text, spec):
    assert normalize_spec(parse_normalize(text)) == spec
    assert parse_normalize(spec) == parse_normalize(text)


# -- the scan folder ----------------------------------------------------------------------------

def test_a_folder_goes_from_new_to_finished_and_keeps_the_settings_given(tmp_path):
    folder = ScanFolder(tmp_path / "scan")
    assert folder.state == "new" and folder.settings() is None and folder.normalize is None
    folder.create({"model": "conv", "normalize": (0.5, 0.5), "limit": None, "weights": "seed 0"})
    scan_into(folder.path, normalize=(0.5, 0.5))
    assert folder.state == "finished"
    assert json.loads((tmp_path / "scan" / "settings.json").read_text()) == {
        "model": "conv", "normalize": [0.5, 0.5], "limit": None, "weights": "seed 0"}
    assert folder.normalize == (0.5, 0.5) and folder.load().seen == 6


def test_a_folder_holding_a_scan_keeps_its_first_settings(tmp_path):
    folder = ScanFolder(tmp_path)
    folder.create({"normalize": None, "limit": None, "weights": "first"})
    scan_into(tmp_path)
    folder.create({"normalize": None, "limit": None, "weights": "second"})
    assert folder.settings()["weights"] == "first"


@pytest.mark.parametrize("normalize,limit,message", [
    ((0.5, 0.5), None, "holds a scan made with --normalize imagenet; use the same, or another --out"),
    (None, 4, "holds a scan made with no --limit; use the same, or another --out"),
])
def test_scanning_on_into_a_folder_with_other_settings_is_refused(tmp_path, normalize, limit, message):
    folder = ScanFolder(tmp_path)
    folder.create({"normalize": None, "limit": None})
    scan_into(tmp_path)
    folder.check_settings(None, None)  # the same settings: answered by the scan there
    with pytest.raises(rflens.RFLensError) as e:
        folder.check_settings(normalize, limit)
    assert str(e.value) == f"'{tmp_path}' {message}"


def test_a_scan_made_with_a_limit_names_it_when_refusing_another(tmp_path):
    folder = ScanFolder(tmp_path)
    folder.create({"normalize": [[0.1, 0.2, 0.3], [1, 1, 1]], "limit": 4})
    scan_into(tmp_path, normalize=((0.1, 0.2, 0.3), (1, 1, 1)), limit=4)
    with pytest.raises(rflens.RFLensError, match=r"made with --limit 4; use the same"):
        folder.check_settings(((0.1, 0.2, 0.3), (1, 1, 1)), 5)
    with pytest.raises(rflens.RFLensError, match=r"made with --normalize 0\.1,0\.2,0\.3,1,1,1; use the same"):
        folder.check_settings(None, 4)


def test_an_interrupted_scan_is_partial_and_cannot_be_read_back(tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt
    folder = ScanFolder(str(tmp_path))
    folder.create({"normalize": None, "limit": None})
    with pytest.raises(KeyboardInterrupt):
        scan_into(tmp_path, batch_size=2, progress=interrupt)
    assert folder.state == "partial"
    with pytest.raises(rflens.RFLensError) as e:
        folder.load()
    assert str(e.value) == (f"the scan in '{tmp_path}' is not finished: run the `rflens scan` command that made "
                            "it again to complete it")
    with pytest.raises(rflens.RFLensError, match="made with no --limit"):
        folder.check_settings(None, 2)  # resuming with another limit would mix two scans


def test_a_scan_is_refused_for_a_model_with_other_weights(tmp_path):
    folder = ScanFolder(tmp_path)
    folder.create({"normalize": None, "limit": None, "weights": "random weights (torch seed 0)"})
    scan = scan_into(tmp_path, model=net(0))
    folder.check_model(scan, net(0), "random weights (torch seed 0)")  # the same weights pass
    with pytest.raises(rflens.RFLensError) as e:
        folder.check_model(scan, net(1), "random weights (torch seed 1)")
    assert str(e.value) == (f"the scan in '{tmp_path}' was made with other weights (random weights (torch seed 0)) "
                            "than these (random weights (torch seed 1)); pass the same model and --weights")


def test_a_scan_of_another_model_is_refused_by_its_name(tmp_path):
    # was: "made with other weights (random weights (torch seed 0)) than these (random weights
    # (torch seed 0))" for an alexnet scan given to vgg16 (issue 17)
    folder = ScanFolder(tmp_path)
    folder.create({"model": "alexnet", "normalize": None, "limit": None, "weights": "random weights (torch seed 0)"})
    scan = scan_into(tmp_path, model=net(0))
    with pytest.raises(rflens.RFLensError) as e:
        folder.check_model(scan, net(1), "random weights (torch seed 0)", "vgg16")
    assert str(e.value) == (f"the scan in '{tmp_path}' was made with alexnet (random weights (torch seed 0)), not "
                            "vgg16; scan vgg16 into another folder, or pass alexnet")


@pytest.mark.parametrize("where,call,message", [
    ("file", lambda f: f.check_settings(None, None), "--out '{path}' is a file, not a folder"),
    ("orphan", lambda f: f.create({}), "cannot make '{path}': folder '{parent}' does not exist"),
    ("empty", lambda f: f.load(), "no scan at '{path}/scan.npz' (make one with `rflens scan`)"),
    ("garbled", lambda f: f.settings(), "cannot read '{path}/settings.json': Expecting value: line 1 column 1 "
                                        "(char 0)"),
])
def test_a_folder_that_cannot_hold_or_give_a_scan_is_refused(tmp_path, where, call, message):
    path = {"file": tmp_path / "scan.txt", "orphan": tmp_path / "no" / "scan"}.get(where, tmp_path)
    if where == "file":
        path.write_text("not a folder")
    if where == "garbled":
        (path / "settings.json").write_text("not json")
    with pytest.raises(rflens.RFLensError) as e:
        call(ScanFolder(path))
    assert str(e.value) == message.format(path=path, parent=path.parent)


def test_the_library_makes_the_scan_folder_as_the_cli_does(tmp_path):
    # was: "'scan/' is not a folder (create it first)" for the README's top_images(..., out="scan/")
    scan = scan_into(tmp_path / "runs" / "scan")
    assert (tmp_path / "runs" / "scan" / "scan.npz").exists() and scan.seen == 6


def test_scanning_into_a_folder_of_other_weights_says_so_and_which(tmp_path):
    scan_into(tmp_path, net(seed=0))
    with pytest.raises(rflens.RFLensError, match=r"made with other settings \(other weights \(fingerprint "
                                                  r"[0-9a-f]{16} then, [0-9a-f]{16} now\)\)"):
        scan_into(tmp_path, net(seed=1))
