"""Models from outside torchvision: timm names, TorchScript archives, ONNX files, pickled models.

Each source reads local files only: timm architectures are built with ``pretrained=False``
and ONNX files are converted with onnx2torch in memory.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError, RFLensError, close_matches, first_line

# onnx2torch converts the operator sets up to this version; newer files are first converted
# down with onnx's version converter
ONNX_OPSET = 17


# -- timm --------------------------------------------------------------------------------------

def _timm():
    try:
        import timm
    except ImportError:
        raise RFLensError("timm models need the 'timm' package: pip install 'rflens[timm]' "
                          "(or pip install timm)") from None
    return timm


def timm_model(name: str, kwargs: dict) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``: the architecture only."""
    timm = _timm()
    if not timm.is_model(name):
        raise ModelNotFoundError(f"unknown timm model '{name}'.{close_matches(name, timm.list_models())}")
    if kwargs.get("pretrained"):
        raise RFLensError("rflens never downloads weights: build the timm model without pretrained=True and "
                          "load a local file (timm:NAME=weights.safetensors, or --weights)")
    kwargs.pop("pretrained", None)
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as e:
        raise RFLensError(f"creating timm model '{name}' failed: {e}") from None


def timm_input_size(name: str) -> tuple[int, ...]:
    """The input size timm's configuration gives the architecture (3x224x224 if none)."""
    try:
        cfg = _timm().get_pretrained_cfg(name)
    except RFLensError:
        raise
    except Exception:  # noqa: BLE001 - an unknown name fails later, with close matches
        cfg = None
    size = getattr(cfg, "input_size", None)
    return tuple(size) if size else (3, 224, 224)


# -- files ---------------------------------------------------------------------------------------

def model_from_file(spec: str, trust_checkpoint: bool = False) -> tuple[nn.Module, str]:
    """An ONNX file, a TorchScript archive, or (trusted only) a pickled ``nn.Module``."""
    from .checkpoints import _is_torchscript, _sniff, _torch_load, read_head

    path = Path(spec)
    head, size = read_head(path, spec, "model file")
    if path.suffix.lower() == ".onnx":
        return onnx_model(path, spec), f"weights from {spec} (ONNX)"
    kind = _sniff(head, size)
    if kind == "safetensors":
        raise RFLensError(_needs_arch(spec, "a safetensors file, which holds weights only"))
    if kind == "zip" and _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any failure means: this torch cannot read it
            raise RFLensError(f"'{spec}' is a TorchScript archive that this PyTorch cannot read "
                              f"({first_line(e, type(e).__name__)})") from None
        return model, f"weights from {spec} (TorchScript)"
    if kind not in ("zip", "pickle", "tar"):
        raise RFLensError(f"cannot read '{spec}': it is not a model file but {kind} (expected an .onnx file, "
                          "a TorchScript archive, or ARCH=WEIGHTS for a weights file)")
    obj = _torch_load(path, spec, kind, trust_checkpoint)
    if isinstance(obj, nn.Module):
        return obj, f"weights from {spec} (pickled model, trusted)"
    raise RFLensError(_needs_arch(spec, "a checkpoint of weights, not a whole model"))


def _needs_arch(spec: str, what: str) -> str:
    return (f"'{spec}' is {what}: name the architecture too, as ARCH={spec} (e.g. resnet18={spec}, "
            f"timm:resnet50={spec} or path/to/net.py:build={spec}), or pass it with --weights")


def onnx_model(path: Path, shown: str) -> nn.Module:
    """The ONNX graph as a ``torch.fx.GraphModule`` (onnx2torch), with real weights."""
    onnx, convert = _onnx()
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others on damaged files
        raise RFLensError(f"cannot read '{shown}': not a valid ONNX file "
                          f"({first_line(e, type(e).__name__)})") from None
    if not proto.graph.node:
        raise RFLensError(f"cannot read '{shown}': not a valid ONNX file (its graph has no nodes)")
    proto = _down_to_supported_opset(onnx, proto, shown)
    _inline_identity_initializers(proto)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = convert(proto).eval()
    except NotImplementedError as e:
        raise RFLensError(f"'{shown}' uses an ONNX operator onnx2torch cannot convert: "
                          f"{first_line(e, type(e).__name__)}") from None
    except Exception as e:  # noqa: BLE001 - the converter fails in many ways on unusual graphs
        raise RFLensError(f"onnx2torch could not convert '{shown}': {type(e).__name__}: "
                          f"{first_line(e, type(e).__name__)}") from None
    _shapes_on_host(model)
    return model


def _shapes_on_host(model: nn.Module) -> None:
    """onnx2torch's Shape makes its result on the input's device, which for rflens' meta trace
    is a tensor without values; every later Reshape, Slice or Gather on it would read garbage.
    Shapes are known without the data, so on meta inputs they are made on the CPU."""
    from onnx2torch.node_converters.shape import OnnxShape

    class HostShape(OnnxShape):
        def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
            if input_tensor.device.type != "meta":
                return super().forward(input_tensor)
            return torch.tensor(input_tensor.shape[self._start:self._end], dtype=torch.int64)
    for m in model.modules():
        if type(m) is OnnxShape:
            m.__class__ = HostShape


def _onnx():
    try:
        import onnx
        from onnx2torch import convert
    except ImportError:
        raise RFLensError("ONNX models need the 'onnx' and 'onnx2torch' packages: pip install 'rflens[onnx]'") from None
    return onnx, convert


def _opset(proto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _down_to_supported_opset(onnx, proto, shown: str):
    if _opset(proto) <= ONNX_OPSET:
        return proto
    try:
        return onnx.version_converter.convert_version(proto, ONNX_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter's C++ assertions surface as RuntimeError
        raise RFLensError(f"'{shown}' uses ONNX opset {_opset(proto)}; onnx2torch converts opsets up to "
                          f"{ONNX_OPSET} and the down-conversion failed ({first_line(e, type(e).__name__)}). "
                          f"Export it with opset_version={ONNX_OPSET}.") from None


def _inline_identity_initializers(proto) -> None:
    """Exporters share equal weights through Identity nodes on an initializer, which onnx2torch
    cannot read as a weight: give each such output its own copy of the initializer."""
    inits = {i.name: i for i in proto.graph.initializer}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in inits:
            t = copy.deepcopy(inits[node.input[0]])
            t.name = node.output[0]
            proto.graph.initializer.append(t)
        else:
            keep.append(node)
    if len(keep) < len(proto.graph.node):
        del proto.graph.node[:]
        proto.graph.node.extend(keep)


def onnx_input_size(spec: str) -> tuple[int, ...] | None:
    """(C, *spatial) of the ONNX graph's first input where the file fixes it, else None."""
    try:
        onnx, _ = _onnx()
        proto = onnx.load(spec, load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable files are reported when the model is loaded
        return None
    inits = {i.name for i in proto.graph.initializer}
    for inp in proto.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in inp.type.tensor_type.shape.dim]
        if len(dims) >= 3 and all(d > 0 for d in dims[1:]):
            return tuple(dims[1:])
        return None
    return None
