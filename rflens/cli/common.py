"""What the commands share: option groups, models built from MODEL and the flags, output names,
number formats, JSON, progress bars, and ``report``, the printer of "label  value" reports.

Everything here calls the library through its public API only (``rflens``, ``rflens.models``,
``rflens.methods``, ``rflens.plot``), as the commands do.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import rflens
from rflens import methods, models
from rflens.errors import RFLensError
from rflens.files import check_writable, writable_folder

MODEL_HELP = ("a torchvision name (vgg16), timm:NAME, package.module:callable or path/to/file.py:callable, "
              "ARCH=WEIGHTS (resnet18=w.safetensors), a TorchScript archive (.pt) or an ONNX file (.onnx)")
UNIT_HELP = "0-based unit index, e.g. 7,7 (default: center)"
LAYER_HELP = "layer name as listed by `rflens table` (e.g. features.29, layer3)"
BATCH_HELP = "inputs per forward pass ({}): larger is faster where memory allows"
SEED_HELP = "seed of the random weights (and of --noise inputs)"
OCCLUDER_SEED_HELP = "seed of the random weights and of random occluder fills"


# -- option groups --------------------------------------------------------------------------------

def model_source_options(sp: argparse.ArgumentParser) -> None:
    """How MODEL is built and called: constructor arguments, which output, extra inputs."""
    sp.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                    help="keyword argument for the model constructor (repeatable)")
    sp.add_argument("--model-output", metavar="KEY_OR_INDEX",
                    help="for a model returning a dict, tuple or list: the output to use (a key or an index)")
    sp.add_argument("--model-input", action="append", metavar="[NAME=]SHAPE",
                    help="an extra input of the model's forward, zeros of this shape without the batch "
                    "dimension, e.g. 1x64x64 or mask=1x64x64 (repeatable; the RF is the first input's)")
    sp.add_argument("--trust-checkpoint", action="store_true",
                    help="allow a weights or model file that pickles Python objects (runs its code: trusted "
                    "files only)")


def model_options(sp: argparse.ArgumentParser) -> None:
    """One MODEL at one --input-size."""
    sp.add_argument("model", help=MODEL_HELP)
    sp.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: the model's usual size)")
    model_source_options(sp)


def weights_options(sp: argparse.ArgumentParser, channel: bool = True, seed: str = SEED_HELP) -> None:
    """Real weights for commands that run the model: --weights or a seeded initialisation, the
    device, and (``channel``) one output channel."""
    sp.add_argument("--weights", metavar="PATH", help="load these weights (safetensors, torch.save state "
                    "dict or TorchScript) instead of random ones")
    sp.add_argument("--seed", type=int, default=0, help=seed)
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the model runs (auto: CUDA when present)")
    if channel:
        sp.add_argument("--channel", type=int, help="one output channel (default: the sum over channels)")


def channel_option(sp: argparse.ArgumentParser) -> None:
    """--channel: one neuron (a channel at the unit's position) instead of the union of all."""
    sp.add_argument("--channel", type=int, metavar="C", help="one channel: the field of that neuron "
                    "(default: the union over the channels at the unit's position)")


def image_options(sp: argparse.ArgumentParser) -> None:
    """Images fed to the model: their size, how the model is built, their normalisation."""
    sp.add_argument("--input-size", help="C x spatial, e.g. 3x48x48: images are resized and centre-cropped "
                    "to it (default: the model's usual size, or the scan's)")
    model_source_options(sp)
    sp.add_argument("--normalize", metavar="MEAN,STD",
                    help="pixel normalisation, on [0, 1] pixels: imagenet (the default), none, MEAN,STD for "
                    "every channel (MTCNN: 0.5,0.5) or M1,M2,M3,S1,S2,S3; with --scan: the scan's")


def occluder_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--occluder", type=int, default=11, metavar="PX", help="occluder side in pixels (11)")
    sp.add_argument("--stride", type=int, default=3, metavar="PX", help="occluder step in pixels (3)")
    sp.add_argument("--fill", choices=["random", "zeros", "mean", "blur"], default="random",
                    help="what an occluder shows (random: uniform noise in the image's range)")


def ray_options(sp: argparse.ArgumentParser) -> None:
    """Where the command's jobs run: this process, or a Ray cluster (``rflens[ray]``)."""
    sp.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                    help="run on Ray actors holding the model (one per GPU, else per CPU): a local cluster started "
                    "for the command, or the cluster at ADDRESS (ray://head:10001, auto); same results as without")
    sp.add_argument("--actors", type=int, metavar="N", help="with --ray: this many model replicas")


def executor_arg(args):
    """The ``executor=`` the --ray and --actors flags ask for (None: this process)."""
    methods.check_count("--actors", args.actors)
    if args.ray is None:
        if args.actors is not None:
            raise RFLensError("--actors needs --ray")
        return None
    return rflens.RayExecutor(args.ray or None, args.actors)


def output_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-o", "--output", help="picture to write: .png, .svg or .pdf (default: a name "
                    "from the arguments, in the current folder)")


def format_option(sp: argparse.ArgumentParser, choices: tuple[str, ...] = ("text", "json")) -> None:
    """--format, the first choice the default."""
    what = {"table": "a table", "text": "a text report", "json": "JSON on stdout",
            "csv": "CSV", "markdown": "a Markdown table"}
    sp.add_argument("--format", choices=list(choices), default=choices[0],
                    help="print " + ", ".join(f"{c}: {what[c]}" for c in choices) + f" (default: {choices[0]})")


# -- models -----------------------------------------------------------------------------------

def load(spec: str, args, device: str = "meta", weigh: Callable | None = None):
    """The model MODEL names, adapted by --model-output/--model-input, and which weights it holds
    (None: its own initialisation).  ``weigh(model, note)`` may load weights into the model as
    built (before adapting, whose wrapper would change the state dict's keys) and give the note."""
    model, note = models.build_model(spec, models.parse_model_args(args.model_arg), device=device,
                              trust_checkpoint=args.trust_checkpoint)
    if weigh is not None:
        note = weigh(model, note)
    return models.adapt(model, args.model_output, models.parse_model_inputs(args.model_input)), note


def size_for(spec: str, args) -> tuple[int, ...]:
    """--input-size, or the model's usual size."""
    return rflens.parse_input_size(args.input_size) if args.input_size else models.default_input_size(spec)


def model_and_size(args, device: str = "meta"):
    return load(args.model, args, device)[0], size_for(args.model, args)


def analysis(args):
    """The analysis of MODEL at its size, named for the pictures' titles."""
    model, size = model_and_size(args)
    found = rflens.analyze(model, size)
    found.model_name = args.model
    return found


def weighted_model(spec: str, args):
    """The model with real values, and a line saying which: ``--weights`` loaded, or
    torchvision's random initialisation drawn from ``--seed``, so that two runs (and a resumed
    checkpoint, which checks the weights) see the same network."""
    import torch
    torch.manual_seed(args.seed)

    def weigh(model, note):
        if args.weights:
            return models.load_weights(model, args.weights, trust_checkpoint=args.trust_checkpoint).summary()
        if note is None:
            # a callable may load trained weights itself (or draw them from the seed)
            return (f"weights as built by {spec} (torch seed {args.seed})" if ":" in spec
                    else f"random weights (torch seed {args.seed})")
        return note
    return load(spec, args, "cpu", weigh)


def check_weights_flags(args, models: list[str]) -> None:
    if args.weights and len(models) > 1:
        raise RFLensError(f"--weights loads one file into one model, but {len(models)} models were given "
                          f"({', '.join(models)}); run one model per command")
    if args.trust_checkpoint and not args.weights and not any(_names_a_file(m) for m in models):
        raise RFLensError("--trust-checkpoint only applies to a file given with --weights (or as MODEL)")
    for spec in models:
        if args.weights and _names_a_file(spec):
            raise RFLensError(f"--weights {args.weights}: MODEL '{spec}' already holds weights; give the "
                              "architecture by name, or drop --weights")


def _names_a_file(spec: str) -> bool:
    return "=" in spec or Path(spec).is_file() or Path(spec).suffix.lower() in (".onnx", ".pt", ".pth")


def device_arg(text: str) -> str | None:
    """``None`` lets the library choose (CUDA when present)."""
    if text == "auto":
        return None
    if text == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise RFLensError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return text


def no_local(layer):
    raise RFLensError(f"layer '{layer.name}' has no local receptive field: every path to it passes "
                      f"global context ({', '.join(layer.global_via[:2])})")


# -- units and output files -------------------------------------------------------------------

def parse_unit(text: str) -> tuple[int, ...] | None:
    """``7,7`` (or ``(7, 7)``) as a position; ``center`` as None, the library's centre unit."""
    if text in ("center", "centre"):
        return None
    try:
        return tuple(int(p) for p in text.replace("(", "").replace(")", "").split(",") if p.strip() != "")
    except ValueError:
        raise RFLensError(f"--unit {text!r} is not a comma-separated list of integers (e.g. 7,7)") from None


def output_path(args, default: str) -> str:
    """-o, or ``default`` made a safe file name."""
    if args.output:
        return args.output
    return safe_name(default)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def check_output(path: str) -> None:
    """Refuse a name ``save`` would refuse before a long computation, not after it."""
    if Path(path).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise RFLensError(f"cannot write '{path}': use a .png, .svg or .pdf name")
    check_writable(path)


def checked_output(args, default: str) -> str | None:
    """The picture's path (-o or ``default``), refused now if ``save`` would refuse it later;
    None for a JSON run without -o, which prints its JSON and writes nothing else."""
    if getattr(args, "format", None) == "json" and not args.output:
        return None
    path = output_path(args, default)
    check_output(path)
    return path


def name_of(spec: str) -> str:
    """A model argument as a short name for files: the weights file's stem (``ARCH=WEIGHTS``,
    a checkpoint or archive), the class of ``file.py:Class``, the name of ``timm:NAME``.

    >>> name_of("mobilenet_v2=/home/me/weights/mobilenet_v2-b0353104.pth"), name_of("nets.py:Net")
    ('mobilenet_v2-b0353104', 'Net')
    """
    tail = spec.split("=", 1)[1] if "=" in spec else (spec.rpartition(":")[2] or spec)
    path = Path(tail)
    return path.stem if path.suffix.lower() in _MODEL_FILES or "/" in tail else tail


_MODEL_FILES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".onnx", ".ts", ".jit", ".py")


def check_output_first(args) -> None:
    """Refuse -o before the work when it cannot be written; without -o, the current folder,
    where the default name (known only after the work) goes."""
    if args.output:
        check_output(args.output)
    else:
        writable_folder(".", "cannot write the picture (no -o given)")


def picture_for(args, analysis):
    """--image fitted to the model's input, or None."""
    if not getattr(args, "image", None):
        return None
    if len(analysis.spatial) != 2:
        raise RFLensError("--image needs a model with 2-D inputs")
    return methods.load_image(args.image, analysis.spatial)


# -- formats ----------------------------------------------------------------------------------

def fmt(values) -> str:
    """One number where all agree (``7``), else all of them (``7x5``)."""
    values = list(values)
    if len(set(map(str, values))) == 1:
        return str(values[0])
    return "x".join(str(v) for v in values)


def size_text(size) -> str:
    return "x".join(map(str, size))


def coords(values, digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
                     for v in values)


def per_axis(values, digits: int = 2) -> str:
    return " x ".join(f"{v:.{digits}f}" for v in values)


def box_text(box) -> str:
    return " x ".join(f"[{a}, {b})" for a, b in box)


def unit_line(layer: str, unit, channel) -> str:
    which = "all channels" if channel is None else f"channel {channel}"
    return f"{layer}, unit {', '.join(map(str, unit))} ({which})"


def model_line(spec: str, size, weights: str | None = None) -> str:
    """The first line of a report: the model, its input size and (if it ran) its weights."""
    return f"{spec} at {size_text(size)}" + (f", {weights}" if weights is not None else "")


def short(spec: str) -> str:
    """A model's name for a progress bar, which has no room for a path."""
    return spec.rpartition(":")[2] or spec


def dumps(obj) -> str:
    """JSON with one line per field of a record (lists of numbers stay on one line)."""
    def record(d: dict, pad: str) -> str:
        fields = ",\n".join(f"{pad}  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
        return f"{pad}{{\n{fields}\n{pad}}}"
    if isinstance(obj, dict):
        return record(obj, "")
    return "[\n" + ",\n".join(record(d, "  ") for d in obj) + "\n]"


LABEL_WIDTH = 12


def report(rows: Iterable[tuple[str, str] | str]) -> None:
    """Print a text report: one ``(label, value)`` row a line, the values in one column (after
    the longest label, and never before column 13); a plain string is a line of its own, such as
    a list under the row above.

    >>> report([("model", "vgg16 at 3x224x224"), ("support", "196 pixels"), "  1. a.png"])
    model        vgg16 at 3x224x224
    support      196 pixels
      1. a.png
    """
    rows = list(rows)
    width = max([LABEL_WIDTH] + [len(r[0]) for r in rows if not isinstance(r, str)])
    print("\n".join(r if isinstance(r, str) else f"{r[0]:<{width}} {r[1]}" for r in rows))


# -- progress -----------------------------------------------------------------------------------

def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def progress():
    """A progress bar on stderr with the count, the rate (images or inputs per second) and the
    time left, only on a terminal: stdout stays clean for JSON and captured logs get no control
    codes."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class Rate(ProgressColumn):
        """Units per second, from rich's own speed estimate; the unit is the task's ``unit`` field."""

        def render(self, task) -> Text:
            unit = task.fields.get("unit", "it")
            if task.speed is None:
                return Text(f"- {unit}/s", style="progress.data.speed")
            speed = task.speed
            text = f"{speed:.1f} {unit}/s" if speed >= 1 or speed == 0 else f"{1 / speed:.1f} s/{unit}"
            return Text(text, style="progress.data.speed")

    terminal = stderr_is_terminal()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True, force_terminal=terminal or None), disable=not terminal)


def tracker(bars, description: str, total: int | None = None, unit: str = "image") -> Callable[[int, int | None], None]:
    """A new bar on ``bars`` (a ``progress()``) counting ``unit``s, and the ``progress=``
    callback that moves it."""
    task = bars.add_task(description, total=total, unit=unit)

    def update(done: int, total: int | None) -> None:
        bars.update(task, completed=done, total=total)
    return update
