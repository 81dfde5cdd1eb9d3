"""Turning a MODEL argument into an ``nn.Module``: names, callables and files (``load_model``).

Architectures are built on the meta device by default (the theoretical RF needs no weights),
so even a 100M-parameter model costs no memory, and nothing is ever downloaded.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelNotFoundError, RFLensError, close_matches

# input sizes that differ from 3x224x224
DEFAULT_SIZES = {
    "inception_v3": (3, 299, 299),
    "quantized_inception_v3": (3, 299, 299),
    "r3d_18": (3, 16, 112, 112),
    "mc3_18": (3, 16, 112, 112),
    "r2plus1d_18": (3, 16, 112, 112),
    "s3d": (3, 16, 224, 224),
    # video transformers: their position encodings are made for 16 frames of 224x224
    "mvit_v1_b": (3, 16, 224, 224),
    "mvit_v2_s": (3, 16, 224, 224),
    "swin3d_t": (3, 16, 224, 224),
    "swin3d_s": (3, 16, 224, 224),
    "swin3d_b": (3, 16, 224, 224),
}


def torchvision_names() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models())


def quantized_builder(spec: str, kwargs: dict) -> bool:
    """Whether ``spec`` names one of torchvision's quantized builders (``quantized_resnet18``)
    that is to quantize: by default it does (``quantize=True``), as its name says; the float
    model it quantizes is ``quantize=False``.

    >>> quantized_builder("quantized_resnet18", {}), quantized_builder("quantized_resnet18", {"quantize": False})
    (True, False)
    >>> quantized_builder("resnet18", {})
    False
    """
    import torchvision
    if spec not in torchvision.models.list_models(module=torchvision.models.quantization):
        return False
    return bool(kwargs.get("quantize", True))


@contextlib.contextmanager
def no_downloads():
    """Any attempt to fetch weights fails at once with a message, instead of a network hang."""
    import torch.hub

    def refuse(url, *args, **kwargs):
        raise RFLensError(f"the model tried to download weights from {url}; rflens never downloads. "
                          "Build the architecture without weights, or pass a local file.")
    saved = torch.hub.load_state_dict_from_url, torch.hub.download_url_to_file
    torch.hub.load_state_dict_from_url, torch.hub.download_url_to_file = refuse, refuse
    try:
        yield
    finally:
        torch.hub.load_state_dict_from_url, torch.hub.download_url_to_file = saved


def parse_model_args(pairs: list[str] | None) -> dict:
    """``key=value`` strings to keyword arguments (values as Python literals where they parse).

    >>> parse_model_args(["num_classes=10", "mode=fast"])
    {'num_classes': 10, 'mode': 'fast'}
    """
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise RFLensError(f"--model-arg {pair!r} is not of the form key=value")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


@contextlib.contextmanager
def empty_weights():
    """Parameters are created on the meta device as modules register them; constructor code
    that computes with ordinary tensors (RegNet's width schedule) still runs on the CPU."""
    register = nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)
    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


TORCH_FILES = (".pt", ".pth", ".bin", ".ckpt", ".tar", ".jit", ".torchscript")
WEIGHTS_FILES = TORCH_FILES + (".safetensors",)


def load_model(spec: str, kwargs: dict | None = None, device: str | torch.device = "meta", *,
               output: str | int | None = None, extra_inputs=None, trust_checkpoint: bool = False) -> nn.Module:
    """The model a MODEL argument names (nothing is ever downloaded):

    * a torchvision architecture name (``resnet18``), with random weights; a quantized one
      (``quantized_resnet18``) is quantized (``quantize=True``) on the CPU after a calibration on
      random data, and analysed through its float twin (``rflens.engine.quantized``);
    * ``timm:NAME``, a timm architecture (``timm:convnext_atto``; needs the ``timm`` extra);
    * ``trained:NAME``, a trained ImageNet network whose weights ship in a registry package
      (``trained:mobilenet_v2``, ``trained:vgg16_hed``; see ``rflens.models.trained``), always
      with its weights;
    * ``package.module:callable`` or ``path/to/file.py:callable`` (``kwargs`` are passed to it);
    * ``ARCH=WEIGHTS``: any of the above with a weights file loaded into it, strictly
      (``resnet18=run/best.safetensors``; see ``rflens.checkpoints.load_weights``);
    * a TorchScript archive (``model.pt`` from ``torch.jit.save``), analysed exactly at its
      outputs (TorchScript hides the calls of its submodules);
    * an ONNX file (``model.onnx``), converted with onnx2torch (needs the ``onnx`` extra);
    * a whole pickled model (``torch.save(model)``) only with ``trust_checkpoint=True``.

    On ``device="meta"`` (the default) an architecture's parameters hold no data: enough for
    the theoretical receptive field, at no memory cost.  Models read from a file keep the
    file's weights.  ``output`` and ``extra_inputs`` adapt models with several outputs or
    inputs (see ``rflens.adapt``).

    >>> load_model("vgg16").__class__.__name__
    'VGG'
    """
    from .adapt import adapt
    model, _ = build_model(spec, kwargs, device, trust_checkpoint=trust_checkpoint)
    return adapt(model, output, extra_inputs)


def build_model(spec: str, kwargs: dict | None = None, device: str | torch.device = "meta", *,
                trust_checkpoint: bool = False) -> tuple[nn.Module, str | None]:
    """``load_model`` without the adaptation, and a line saying which weights were loaded
    (None where the model was built with its own initialisation)."""
    kwargs = dict(kwargs or {})
    if not isinstance(spec, str) or not spec.strip():
        raise ModelNotFoundError(f"a model name is needed, got {spec!r}")
    path = Path(spec)
    arch, eq, weights = spec.partition("=")
    if path.is_file() or (not eq and (path.suffix.lower() == ".onnx" or path.suffix.lower() in WEIGHTS_FILES)):
        if kwargs:
            raise RFLensError(f"'{spec}' is a file: constructor arguments (--model-arg) do not apply to it")
        from .sources import model_from_file
        model, note = model_from_file(spec, trust_checkpoint)
        if str(device) not in ("meta", "cpu"):
            model = model.to(device)
        return model.eval(), note
    if spec.startswith("trained:"):
        if kwargs:
            raise RFLensError(f"'{spec}' is a trained network: constructor arguments (--model-arg) do not apply to it")
        from .trained import TRAINED, trained_model
        name = spec[len("trained:"):]
        model = trained_model(name)  # an unknown name is refused here, listing the known ones
        if str(device) not in ("meta", "cpu"):
            model = model.to(device)
        return model, f"trained weights from the package {TRAINED[name].package} ({TRAINED[name].about})"
    if eq:
        if not weights:
            raise ModelNotFoundError(f"'{spec}': give a weights file after '=', e.g. resnet18=weights.safetensors")
        from .checkpoints import load_weights
        model, _ = build_model(arch, kwargs, device)
        report = load_weights(model, weights, trust_checkpoint=trust_checkpoint)
        return model, report.summary()
    if quantized_builder(spec, kwargs):
        # quantizing calibrates real weights on random data, and quantized ops run on the CPU only
        kwargs["quantize"], device = True, "cpu"

    def make(place):
        with no_downloads(), place, warnings.catch_warnings():
            # torchvision's quantizing says that quantized tensors are deprecated in PyTorch, and
            # that an observer it never runs (the auxiliary heads') returns default values
            warnings.filterwarnings("ignore", "(must run observer|torch.quantize_per_tensor)", UserWarning)
            if spec.startswith("timm:"):
                from .sources import timm_model
                return timm_model(spec[len("timm:"):], dict(kwargs))
            if ":" in spec:
                return _from_callable(spec, dict(kwargs))
            return _from_torchvision(spec, dict(kwargs))
    if str(device) != "meta":
        model = make(torch.device(device))
    else:
        try:
            model = make(empty_weights())
        except RuntimeError as e:
            if "meta" not in str(e):
                raise
            # a constructor that runs a forward to learn its shapes (torchvision's SSDs) needs real
            # parameters: build it on the CPU
            model = make(contextlib.nullcontext())
    if not isinstance(model, nn.Module):
        raise RFLensError(f"'{spec}' returned a {type(model).__name__}, not a torch.nn.Module")
    return model.eval(), None


def _from_torchvision(name: str, kwargs: dict) -> nn.Module:
    import torchvision
    names = torchvision_names()
    if name not in names:
        raise ModelNotFoundError(
            f"unknown model '{name}': not a torchvision architecture and not of the form "
            f"package.module:callable.{close_matches(name, names)}")
    if name in ("inception_v3", "quantized_inception_v3"):
        kwargs.setdefault("init_weights", False)
    try:
        return torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)
    except TypeError:
        return torchvision.models.get_model(name, weights=None, **kwargs)


def _from_callable(spec: str, kwargs: dict) -> nn.Module:
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py") or "/" in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise ModelNotFoundError(f"no Python file at '{module_name}' (from '{spec}')")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules.setdefault(path.stem, module)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ModelNotFoundError(f"cannot import '{module_name}' (from '{spec}'): {e}") from None
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise ModelNotFoundError(f"'{module_name}' has no attribute '{attr}'.{close_matches(part, names)}")
        target = getattr(target, part)
    if isinstance(target, nn.Module):
        return target
    if not callable(target):
        raise ModelNotFoundError(f"'{spec}' is neither an nn.Module nor callable")
    try:
        return target(**kwargs)
    except TypeError as e:
        raise RFLensError(f"calling '{spec}' failed: {e}") from None


def default_input_size(spec: str) -> tuple[int, ...]:
    """The input size a MODEL argument is analysed at unless told: the architecture's usual
    one, or the fixed input shape an ONNX file declares."""
    arch = spec.partition("=")[0]
    if arch.lower().endswith(".onnx"):
        from .sources import onnx_input_size
        return onnx_input_size(arch) or (3, 224, 224)
    if arch.startswith("timm:"):
        from .sources import timm_input_size
        return timm_input_size(arch[len("timm:"):])
    return DEFAULT_SIZES.get(arch, (3, 224, 224))
