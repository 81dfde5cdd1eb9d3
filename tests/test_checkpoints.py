"""load_weights: formats, containers, prefixes, strictness, unsafe pickles and damaged files."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from rflens.models.checkpoints import LoadReport, load_weights
from rflens.errors import RFLensError
from rflens.models import load_model

KEYS = ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "3.weight", "3.bias"]


def small(width: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, 2, 1))


def trained() -> dict[str, torch.Tensor]:
    """A state dict that a fresh model cannot have by chance."""
    torch.manual_seed(0)
    state = small().state_dict()
    return {k: (v + torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 7)
            for k, v in state.items()}


def assert_holds(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k


# --- round trips ---------------------------------------------------------------------------

def test_pth_round_trip_restores_every_tensor(tmp_path):
    state = trained()
    torch.save(state, tmp_path / "w.pth")
    model = small()
    report = load_weights(model, tmp_path / "w.pth")
    assert_holds(model, state)
    assert (report.format, report.loaded, report.missing, report.unexpected, report.mismatched) == \
        ("torch", 9, (), (), ())
    assert (report.stripped_prefix, report.container_key, report.nonfinite) == (None, None, ())


def test_safetensors_round_trip_restores_every_tensor(tmp_path):
    state = trained()
    save_file(state, tmp_path / "w.safetensors")
    model = small()
    report = load_weights(model, str(tmp_path / "w.safetensors"))
    assert_holds(model, state)
    assert (report.format, report.loaded) == ("safetensors", 9)


def test_safetensors_file_with_a_pth_name_is_read_as_safetensors(tmp_path):
    state = trained()
    save_file(state, tmp_path / "w.pth")
    model = small()
    assert load_weights(model, tmp_path / "w.pth").format == "safetensors"
    assert_holds(model, state)


def test_legacy_torch_save_format_loads(tmp_path):
    state = trained()
    torch.save(state, tmp_path / "w.tar", _use_new_zipfile_serialization=False)
    model = small()
    assert load_weights(model, tmp_path / "w.tar").loaded == 9
    assert_holds(model, state)


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_weights_replace_meta_parameters_so_the_model_runs_on_cpu(tmp_path, fmt):
    torch.manual_seed(0)
    # random values of the right shapes: quicker than torchvision's initialisation
    state = {k: torch.rand(v.shape, dtype=v.dtype) if v.is_floating_point() else torch.zeros_like(v, device="cpu")
             for k, v in load_model("resnet18").state_dict().items()}
    path = tmp_path / "resnet18.bin"
    torch.save(state, path) if fmt == "torch" else save_file(state, path)
    model = load_model("resnet18")
    assert any(p.is_meta for p in model.parameters())

    report = load_weights(model, path)

    assert report.loaded == len(state) == 122
    assert not any(t.is_meta for t in model.state_dict().values())
    assert_holds(model, state)
    assert model.conv1.weight.requires_grad
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_tensors_are_cast_to_the_models_dtype(tmp_path):
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in trained().items()}
    torch.save(state, tmp_path / "half.pth")
    model = small()
    load_weights(model, tmp_path / "half.pth")
    assert model[0].weight.dtype == torch.float32
    assert torch.equal(model[0].weight, state["0.weight"].float())


# --- containers and prefixes ---------------------------------------------------------------

def test_dataparallel_module_prefix_is_stripped_and_reported(tmp_path):
    state = trained()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    model = small()
    report = load_weights(model, tmp_path / "ddp.pth")
    assert_holds(model, state)
    assert (report.stripped_prefix, report.stripped_count, report.container_key) == ("module.", 9, None)
    assert report.summary() == f"loaded 9 tensors from {tmp_path / 'ddp.pth'} (torch); " \
                               "stripped prefix 'module.' from 9 keys"


def test_lightning_checkpoint_is_unwrapped_and_model_prefix_stripped(tmp_path):
    state = trained()
    torch.save({"epoch": 3, "global_step": 120, "optimizer_states": [],
                "state_dict": {f"model.{k}": v for k, v in state.items()}}, tmp_path / "last.ckpt")
    model = small()
    report = load_weights(model, tmp_path / "last.ckpt")
    assert_holds(model, state)
    assert (report.container_key, report.stripped_prefix, report.loaded) == ("state_dict", "model.", 9)


def test_compiled_model_under_ddp_has_both_prefixes_stripped(tmp_path):
    state = trained()
    save_file({f"module._orig_mod.{k}": v for k, v in state.items()}, tmp_path / "w.safetensors")
    model = small()
    report = load_weights(model, tmp_path / "w.safetensors")
    assert_holds(model, state)
    assert (report.stripped_prefix, report.stripped_count) == ("module._orig_mod.", 9)


def test_prefix_is_kept_when_the_model_itself_uses_it(tmp_path):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = small()

    state = {f"model.{k}": v for k, v in trained().items()}
    torch.save(state, tmp_path / "w.pth")
    model = Wrapper()
    report = load_weights(model, tmp_path / "w.pth")
    assert report.stripped_prefix is None
    assert_holds(model, state)


def test_model_weights_are_preferred_to_ema_and_optimizer_entries(tmp_path):
    state = trained()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model_ema": ema, "optimizer": {"state": {}, "param_groups": []}, "model": state},
               tmp_path / "w.pth")
    model = small()
    assert load_weights(model, tmp_path / "w.pth").container_key == "model"
    assert_holds(model, state)


def test_ema_only_checkpoint_loads_its_ema_weights(tmp_path):
    state = trained()
    torch.save({"epoch": 9, "model_ema": state}, tmp_path / "w.pth")
    model = small()
    assert load_weights(model, tmp_path / "w.pth").container_key == "model_ema"
    assert_holds(model, state)


def test_dict_without_a_state_dict_names_its_keys(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "w.pth")
    with pytest.raises(RFLensError, match=r"holds a dict with keys \(epoch, optimizer\) but no state dict"):
        load_weights(small(), tmp_path / "w.pth")


# --- strictness ----------------------------------------------------------------------------

def test_missing_keys_raise_with_count_and_names(tmp_path):
    state = trained()
    del state["3.weight"], state["3.bias"]
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(RFLensError) as err:
        load_weights(small(), tmp_path / "w.pth")
    assert f"'{tmp_path / 'w.pth'}' does not fit Sequential: 2 missing keys (3.weight, 3.bias), " \
           "0 unexpected, 0 shape mismatches." in str(err.value)


def test_unexpected_keys_raise_with_count_and_names(tmp_path):
    state = trained()
    state["head.weight"] = torch.ones(2)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(RFLensError, match=r"0 missing keys, 1 unexpected \(head\.weight\), 0 shape mismatches"):
        load_weights(small(), tmp_path / "w.pth")


def test_shape_mismatch_raises_with_both_shapes(tmp_path):
    state = trained()
    state["0.weight"] = torch.ones(4, 3, 5, 5)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(RFLensError, match=r"1 shape mismatch \(0\.weight: file 4x3x5x5 vs model 4x3x3x3\)"):
        load_weights(small(), tmp_path / "w.pth")


def test_long_key_lists_are_cut_to_five_with_a_count(tmp_path):
    torch.save({}, tmp_path / "empty_dict.pth")
    with pytest.raises(RFLensError, match=r"9 missing keys \(0\.weight, 0\.bias, 1\.weight, 1\.bias, "
                                          r"1\.running_mean, and 4 more\)"):
        load_weights(small(), tmp_path / "empty_dict.pth")


def test_non_strict_loads_what_fits_and_reports_the_rest(tmp_path):
    state = trained()
    del state["3.bias"]
    state["0.weight"] = torch.ones(4, 3, 5, 5)
    state["head.weight"] = torch.ones(2)
    torch.save(state, tmp_path / "w.pth")
    model = small()
    before = model.state_dict()
    report = load_weights(model, tmp_path / "w.pth", strict=False)
    assert report.loaded == 7
    assert report.missing == ("3.bias",)
    assert report.unexpected == ("head.weight",)
    assert report.mismatched == (("0.weight", (4, 3, 5, 5), (4, 3, 3, 3)),)
    after = model.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert torch.equal(after["3.bias"], before["3.bias"])
    assert torch.equal(after["3.weight"], state["3.weight"])
    assert report.summary().endswith("not loaded: 1 missing key, 1 unexpected, 1 shape mismatch")


def test_no_matching_key_at_all_shows_both_namings(tmp_path):
    torch.save({f"backbone.{k}": v for k, v in trained().items()}, tmp_path / "w.pth")
    with pytest.raises(RFLensError, match=r"the file's look like 'backbone\.0\.weight', the model's like '0\.weight'"):
        load_weights(small(), tmp_path / "w.pth")


# --- pickles that need trust ---------------------------------------------------------------

class Payload:
    """Unpickling this creates a folder: stands in for any code an attacker could run."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running_its_code(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"state_dict": {"0.weight": Payload(str(marker))}}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    with pytest.raises(RFLensError) as err:
        load_weights(small(), path)
    message = str(err.value)
    assert "contains Python objects that would have to be executed" in message
    assert "trust_checkpoint=True" in message and "--trust-checkpoint" in message
    assert "trusted source" in message
    assert not marker.exists()


def test_whole_model_pickle_needs_trust_and_loads_with_it(tmp_path):
    torch.manual_seed(1)
    saved = small()
    torch.save(saved, tmp_path / "whole.pth")
    with pytest.raises(RFLensError, match=r"refers to torch\.nn\.modules\.container\.Sequential.*trust_checkpoint"):
        load_weights(small(), tmp_path / "whole.pth")
    model = small()
    report = load_weights(model, tmp_path / "whole.pth", trust_checkpoint=True)
    assert report.loaded == 9
    assert_holds(model, saved.state_dict())


def test_trust_is_not_needed_for_plain_state_dicts_and_changes_nothing(tmp_path):
    state = trained()
    torch.save(state, tmp_path / "w.pth")
    model = small()
    assert load_weights(model, tmp_path / "w.pth", trust_checkpoint=True).loaded == 9
    assert_holds(model, state)


# --- damaged and wrong files ---------------------------------------------------------------

def _real_pth(tmp_path) -> bytes:
    torch.save(trained(), tmp_path / "real.pth")
    return (tmp_path / "real.pth").read_bytes()


def _real_safetensors(tmp_path) -> bytes:
    save_file(trained(), tmp_path / "real.safetensors")
    return (tmp_path / "real.safetensors").read_bytes()


def _zip_of_text(path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not weights")


BAD_FILES = {
    "missing": (lambda p, tmp: None, r"no weights file at"),
    "folder": (lambda p, tmp: p.mkdir(), r"is a folder, not a weights file"),
    "empty": (lambda p, tmp: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "truncated zip .pth": (lambda p, tmp: p.write_bytes((d := _real_pth(tmp))[:len(d) // 2]),
                           r"cannot read .* truncated or corrupt"),
    "truncated legacy .pth": (lambda p, tmp: (torch.save(trained(), tmp / "old.pth", _use_new_zipfile_serialization=False),
                                              p.write_bytes((d := (tmp / "old.pth").read_bytes())[:len(d) // 2])),
                              r"cannot read .* truncated or corrupt"),
    "truncated safetensors": (lambda p, tmp: p.write_bytes((d := _real_safetensors(tmp))[:len(d) // 2]),
                              r"cannot read .* damaged or truncated safetensors"),
    "png": (lambda p, tmp: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200)), r"not a weights file but a PNG image"),
    "text": (lambda p, tmp: p.write_text("epoch,loss\n1,0.5\n"), r"not a weights file but a text file"),
    "zip without a checkpoint": (lambda p, tmp: _zip_of_text(p), r"cannot read .* not a PyTorch checkpoint"),
    "a list": (lambda p, tmp: torch.save([torch.ones(2)], p), r"holds a list, not a state dict"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_rflens_error_with_a_clear_message(tmp_path, case):
    make, expected = BAD_FILES[case]
    path = tmp_path / "w.pth"
    make(path, tmp_path)
    with pytest.raises(RFLensError, match=expected):
        load_weights(small(), path)
    # trusted loading must fail just as clearly, not with another exception type
    with pytest.raises(RFLensError):
        load_weights(small(), path, trust_checkpoint=True)


# --- reporting -----------------------------------------------------------------------------

def test_nan_and_inf_weights_load_and_are_listed(tmp_path):
    state = trained()
    state["0.weight"][0, 0, 0, 0] = float("nan")
    state["3.bias"][1] = float("inf")
    save_file(state, tmp_path / "w.safetensors")
    model = small()
    report = load_weights(model, tmp_path / "w.safetensors")
    assert report.nonfinite == ("0.weight", "3.bias")
    assert torch.isnan(model[0].weight[0, 0, 0, 0])
    assert report.summary().endswith("NaN/Inf in 2 tensors (0.weight, 3.bias)")


def test_report_is_frozen():
    report = LoadReport(path="w.pth", format="torch", loaded=1)
    with pytest.raises(AttributeError):
        report.loaded = 2  # type: ignore[misc]
    assert report.summary() == "loaded 1 tensor from w.pth (torch)"


# --- TorchScript ---------------------------------------------------------------------------

def test_torchscript_archive_weights_are_read(tmp_path):
    torch.manual_seed(2)
    saved = small()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still in use
        torch.jit.script(saved).save(str(tmp_path / "scripted.pt"))
    model = small()
    report = load_weights(model, tmp_path / "scripted.pt")
    assert (report.format, report.loaded) == ("torchscript", 9)
    assert_holds(model, saved.state_dict())

