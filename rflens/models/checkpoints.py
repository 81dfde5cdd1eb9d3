"""Loading weights files into a model, safely: ``load_weights`` behind the CLI's ``--weights``.

Supported files, recognised by their contents rather than their extension:

* safetensors (``.safetensors``), read with the ``safetensors`` package;
* ``torch.save`` checkpoints (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.tar``), read with
  ``torch.load(..., weights_only=True)``, which only rebuilds tensors and plain containers;
* TorchScript archives (``torch.jit.save``), whose ``state_dict()`` is taken.

A checkpoint that pickles arbitrary Python objects (a whole ``nn.Module``, a custom class) is
refused unless the caller passes ``trust_checkpoint=True``: unpickling it could run any code
the file's author chose.

Checkpoints often wrap the state dict; the first of these keys whose value is a state dict
is used: ``state_dict``, ``model_state_dict``, ``model``, ``module``, then the EMA copies
``state_dict_ema``, ``model_ema``, ``ema``.  Key prefixes added by ``nn.DataParallel``/DDP
(``module.``), Lightning (``model.``) and ``torch.compile`` (``_orig_mod.``) are removed when,
and only when, that makes more keys match the model's.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import RFLensError, first_line

__all__ = ["CONTAINER_KEYS", "STRIPPABLE_PREFIXES", "LoadReport", "load_weights"]

CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module",
                  "state_dict_ema", "model_ema", "ema")
STRIPPABLE_PREFIXES = ("module.", "_orig_mod.", "model.")

_LISTED = 5  # keys named per category in an error message
_MAX_HEADER = 100_000_000  # the safetensors format's own limit on its JSON header


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What ``load_weights`` did.

    ``mismatched`` holds ``(key, file_shape, model_shape)``; ``stripped_prefix`` is the
    prefix removed from the file's keys (prefixes removed in turn are concatenated) and
    ``stripped_count`` how many keys had one; ``container_key`` is the key the state dict was
    found under (nested keys joined by '.'); ``nonfinite`` the loaded keys holding NaN or Inf.
    """

    path: str
    format: str
    loaded: int
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()
    stripped_prefix: str | None = None
    container_key: str | None = None
    nonfinite: tuple[str, ...] = ()
    stripped_count: int = 0

    def summary(self) -> str:
        """One line for the CLI."""
        parts = [f"loaded {_plural(self.loaded, 'tensor')} from {self.path} ({self.format})"]
        if self.container_key:
            parts.append(f"state dict under '{self.container_key}'")
        if self.stripped_prefix:
            parts.append(f"stripped prefix '{self.stripped_prefix}' from {_plural(self.stripped_count, 'key')}")
        if self.missing or self.unexpected or self.mismatched:
            parts.append(f"not loaded: {_plural(len(self.missing), 'missing key')}, "
                         f"{len(self.unexpected)} unexpected, "
                         f"{_plural(len(self.mismatched), 'shape mismatch', 'shape mismatches')}")
        if self.nonfinite:
            parts.append(f"NaN/Inf in {_plural(len(self.nonfinite), 'tensor')} "
                         f"({_listing(self.nonfinite)})")
        return "; ".join(parts)


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True,
                 trust_checkpoint: bool = False) -> LoadReport:
    """Load the weights file at ``path`` into ``model`` (in place) and report what happened.

    With ``strict=True`` (the default) every key of ``model.state_dict()`` must be in the file
    with the same shape and the file may hold nothing else; otherwise an ``RFLensError`` names
    the differences.  With ``strict=False`` the tensors that fit are loaded and the report
    lists the rest.  A model on the meta device gets real tensors in place of its meta ones.
    Tensors are cast to the dtype of the model's.  ``trust_checkpoint=True`` allows full
    unpickling, which can execute code: use it only for files from a trusted source.

    >>> import tempfile
    >>> from torch import nn
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     torch.save(nn.Linear(3, 2).state_dict(), f"{tmp}/linear.pth")
    ...     report = load_weights(nn.Linear(3, 2), f"{tmp}/linear.pth")
    >>> report.loaded, report.format, report.missing
    (2, 'torch', ())
    """
    shown = os.fspath(path)
    state, fmt, container = _read(Path(shown), shown, trust_checkpoint)
    target = model.state_dict()
    state, prefix, stripped = _strip_prefixes(state, target.keys())

    missing = tuple(k for k in target if k not in state)
    unexpected = tuple(k for k in state if k not in target)
    mismatched = tuple((k, tuple(v.shape), tuple(target[k].shape)) for k, v in state.items()
                       if k in target and v.shape != target[k].shape)
    fits = [k for k in state if k in target and state[k].shape == target[k].shape]
    if strict and (missing or unexpected or mismatched):
        raise RFLensError(_misfit_message(shown, model, missing, unexpected, mismatched, state, target))

    # On the meta device there is no storage to copy into, so the loaded tensors are
    # assigned instead; elsewhere they are copied, which keeps the model's devices.
    on_meta = any(t.is_meta for t in target.values())
    ready = {}
    for k in fits:
        like = target[k]
        device = "cpu" if like.is_meta else like.device
        ready[k] = state[k].to(device=device, dtype=like.dtype)
    if ready:
        model.load_state_dict(ready, strict=False, assign=on_meta)
    nonfinite = tuple(k for k, v in ready.items()
                      if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()))
    return LoadReport(path=shown, format=fmt, loaded=len(ready), missing=missing,
                      unexpected=unexpected, mismatched=mismatched, stripped_prefix=prefix,
                      container_key=container, nonfinite=nonfinite, stripped_count=stripped)


# --- reading ---------------------------------------------------------------------------

def _read(path: Path, shown: str, trust: bool) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """The file's state dict, its format and the container key it was found under."""
    head, size = read_head(path, shown, "weights file")
    kind = _sniff(head, size)

    if kind == "safetensors":
        return _read_safetensors(path, shown), "safetensors", None
    if kind == "zip" and _is_torchscript(path):
        return _read_torchscript(path, shown), "torchscript", None
    obj = _torch_load(path, shown, kind, trust)
    state, container = _unwrap(obj, shown)
    return state, "torch", container


def read_head(path: Path, shown: str, what: str) -> tuple[bytes, int]:
    """The first 512 bytes and the size of a file that must exist, be readable and not be empty."""
    if not path.exists():
        raise RFLensError(f"no {what} at '{shown}'")
    if path.is_dir():
        raise RFLensError(f"'{shown}' is a folder, not a {what}")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise RFLensError(f"cannot read '{shown}': {e.strerror or e}") from None
    if size == 0:
        raise RFLensError(f"'{shown}' is empty (0 bytes), not a {what}")
    return head, size


def _sniff(head: bytes, size: int) -> str:
    """'safetensors', 'zip', 'pickle', 'tar', or what the file seems to be instead."""
    # safetensors: an 8-byte little-endian header length, then the JSON header; the length
    # is not checked against the file size so that truncated files get the safetensors error
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < _MAX_HEADER:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    for magic, what in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
                        (b"GIF8", "a GIF image"), (b"%PDF", "a PDF document"),
                        (b"\x1f\x8b", "a gzip archive"), (b"\x89HDF", "an HDF5 (Keras) file"),
                        (b"\x93NUMPY", "a NumPy array file")):
        if head.startswith(magic):
            return what
    return "a text file" if _looks_like_text(head) else "data of an unknown format"


def _looks_like_text(head: bytes) -> bool:
    if any(b < 0x20 and b not in b"\t\n\r\f" for b in head):
        return False
    # a multi-byte character cut by the 512-byte window is still text
    for cut in range(4):
        try:
            head[:len(head) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def _read_safetensors(path: Path, shown: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise RFLensError(f"'{shown}' is a safetensors file; reading it needs the 'safetensors' "
                          "package (pip install safetensors)") from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as e:  # noqa: BLE001 - the Rust reader raises its own error type for any defect
        raise RFLensError(f"cannot read '{shown}': it is a damaged or truncated safetensors file ({e})") from None


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False  # torch.load will explain what is wrong with it


def _read_torchscript(path: Path, shown: str) -> dict[str, torch.Tensor]:
    # A TorchScript archive holds TorchScript code and tensors, which its own loader reads
    # without unpickling Python objects, so it needs no trust.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except Exception as e:  # noqa: BLE001 - any failure means: this torch cannot read it
        raise RFLensError(f"'{shown}' is a TorchScript archive that this PyTorch cannot read ({first_line(e)}); "
                          "save the model's state_dict() with torch.save or safetensors instead") from None


def _torch_load(path: Path, shown: str, kind: str, trust: bool) -> object:
    try:
        with warnings.catch_warnings():
            # plain pickle.dump files use a newer protocol than torch.save; harmless here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged files fail with KeyError, IndexError, ...
        refused = _refused_global(e, kind)
        if refused is None:
            raise RFLensError(_unreadable_message(shown, kind, e)) from None
    if not trust:
        what = f" (it refers to {refused})" if refused else ""
        raise RFLensError(
            f"'{shown}' contains Python objects that would have to be executed to load it{what}; "
            "rflens refuses such files by default. If the file comes from a trusted source, pass "
            "trust_checkpoint=True (CLI: --trust-checkpoint) to load it with full unpickling.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling runs the file's own code, which may fail in any way
        raise RFLensError(f"cannot read '{shown}' even with full unpickling: "
                          f"{type(e).__name__}: {first_line(e)}") from None


def _refused_global(error: Exception, kind: str) -> str | None:
    """The object weights_only refused ('' when unnamed), or None if the file is unreadable."""
    message = str(error)
    if "Weights only load failed" not in message:
        return None
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return found.group(1)
    # Other refusals name only a pickle opcode, which garbage produces too: trust the
    # refusal only for files that are pickles (or torch zip archives) to begin with.
    if kind in ("pickle", "zip", "tar") and "Unsupported operand" in message:
        return ""
    return None


def _unreadable_message(shown: str, kind: str, error: Exception) -> str:
    if kind in ("pickle", "zip", "tar"):
        reason = first_line(error) or type(error).__name__
        return (f"cannot read '{shown}': the file is truncated or corrupt, or not a PyTorch "
                f"checkpoint ({reason})")
    return (f"cannot read '{shown}': it is not a weights file but {kind} "
            "(expected safetensors, a torch.save checkpoint or a TorchScript archive)")


# --- making sense of what was read -----------------------------------------------------

def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _unwrap(obj: object, shown: str) -> tuple[dict[str, torch.Tensor], str | None]:
    path: list[str] = []
    for _ in range(4):  # checkpoints nest containers at most a couple of levels deep
        if isinstance(obj, nn.Module):  # only reachable with trust_checkpoint
            obj = obj.state_dict()
        if _is_state_dict(obj):
            return dict(obj), ".".join(path) or None
        if not isinstance(obj, Mapping):
            break
        present = [k for k in CONTAINER_KEYS if k in obj]
        # a container holding the state dict itself beats one that only nests further
        key = next((k for k in present if isinstance(obj[k], nn.Module) or _is_state_dict(obj[k])),
                   next((k for k in present if isinstance(obj[k], Mapping)), None))
        if key is None:
            break
        path.append(key)
        obj = obj[key]
    where = f" under '{'.'.join(path)}'" if path else ""
    if isinstance(obj, Mapping):
        keys = [str(k) for k in obj][:8]
        more = ", ..." if len(obj) > len(keys) else ""
        raise RFLensError(
            f"'{shown}' holds a dict{where} with keys ({', '.join(keys)}{more}) but no state dict "
            f"of tensors under any of the keys {', '.join(CONTAINER_KEYS)}")
    raise RFLensError(f"'{shown}' holds a {type(obj).__name__}{where}, not a state dict of tensors")


def _strip_prefixes(state: dict[str, torch.Tensor], model_keys: Iterable[str],
                    ) -> tuple[dict[str, torch.Tensor], str | None, int]:
    """Remove the wrapper prefixes that make the most keys match the model's, if any do."""
    wanted = set(model_keys)

    def score(keys: Iterable[str]) -> int:
        return sum(k in wanted for k in keys)

    best, choice = score(state), None
    # Every order of up to three prefixes, shortest first: wrappers nest ('module._orig_mod.'
    # from DDP around a compiled model), and stripping only the outer one matches nothing.
    for n in range(1, len(STRIPPABLE_PREFIXES) + 1):
        for prefixes in itertools.permutations(STRIPPABLE_PREFIXES, n):
            renamed = _renamed(state, prefixes)
            if renamed is not None and score(renamed) > best:
                best, choice = score(renamed), (prefixes, renamed)
    if choice is None:
        return state, None, 0
    prefixes, renamed = choice
    return ({new: state[old] for new, old in renamed.items()}, "".join(prefixes),
            sum(new != old for new, old in renamed.items()))


def _renamed(state: Mapping[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, str] | None:
    """New key -> original key after removing the prefixes in turn; None if one of them
    prefixes no key or would merge two keys into one."""
    renamed = {k: k for k in state}
    for prefix in prefixes:
        if not any(k.startswith(prefix) for k in renamed):
            return None
        renamed = {new.removeprefix(prefix): old for new, old in renamed.items()}
        if len(renamed) < len(state):
            return None
    return renamed


# --- messages --------------------------------------------------------------------------

def _misfit_message(shown: str, model: nn.Module, missing: Sequence[str], unexpected: Sequence[str],
                    mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]],
                    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> str:
    parts = [_plural(len(missing), "missing key") + _named(missing),
             f"{len(unexpected)} unexpected" + _named(unexpected),
             _plural(len(mismatched), "shape mismatch", "shape mismatches")
             + _named([f"{k}: file {_shape(f)} vs model {_shape(m)}" for k, f, m in mismatched])]
    message = f"'{shown}' does not fit {type(model).__name__}: {', '.join(parts)}"
    if state and target and not state.keys() & target.keys():
        message += (f". No key matches: the file's look like '{next(iter(state))}', "
                    f"the model's like '{next(iter(target))}'")
    return message + ". (In Python, load_weights(..., strict=False) loads the tensors that fit.)"


def _named(items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    return f" ({_listing(items)})"


def _listing(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_LISTED])
    return shown + (f", and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else (many or word + 's')}"
