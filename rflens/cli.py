"""The ``rflens`` command line: only calls the library and prints.

    rflens table vgg16
    rflens unit vgg16 --layer features.29 --unit 7,7
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys

import numpy as np

from . import __version__
from .api import analyze, parse_input_size
from .errors import RFLensError
from .files import atomic_write
from .models import default_input_size, load_model, parse_model_args

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def _model_and_size(args, device="meta"):
    model = load_model(args.model, parse_model_args(args.model_arg), device=device)
    size = parse_input_size(args.input_size) if args.input_size else default_input_size(args.model)
    return model, size


def dumps(obj) -> str:
    """JSON with one line per field of a record (lists of numbers stay on one line)."""
    def record(d: dict, pad: str) -> str:
        fields = ",\n".join(f"{pad}  {json.dumps(k)}: {json.dumps(v)}" for k, v in d.items())
        return f"{pad}{{\n{fields}\n{pad}}}"
    if isinstance(obj, dict):
        return record(obj, "")
    return "[\n" + ",\n".join(record(d, "  ") for d in obj) + "\n]"


def _fmt(values) -> str:
    values = list(values)
    if len(set(map(str, values))) == 1:
        return str(values[0])
    return "x".join(str(v) for v in values)


def _flags(rec: dict) -> str:
    flags = []
    if rec["global"]:
        flags.append("global")
    if not rec["uniform"]:
        flags.append("non-uniform")
    if all(rec["covers_input"]):
        flags.append("covers input")
    if rec["min_rf"] != rec["max_rf"]:
        flags.append(f"paths {_fmt(rec['min_rf'])}..{_fmt(rec['max_rf'])}")
    return ", ".join(flags)


TABLE_COLUMNS = ["name", "op", "output_shape", "rf_size", "stride", "start", "flags"]


def _row(rec: dict) -> list[str]:
    return [rec["name"], rec["op"], "x".join(map(str, rec["output_shape"])), _fmt(rec["rf_size"]),
            _fmt(rec["stride"]), _fmt(rec["start"]), _flags(rec)]


def cmd_table(args) -> int:
    model, size = _model_and_size(args)
    records = analyze(model, size).table()
    if args.format == "json":
        print(dumps(records))
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(TABLE_COLUMNS)
        w.writerows(_row(r) for r in records)
        print(buf.getvalue(), end="")
    elif args.format == "markdown":
        print("| " + " | ".join(TABLE_COLUMNS) + " |")
        print("|" + "---|" * len(TABLE_COLUMNS))
        for r in records:
            print("| " + " | ".join(c.replace("|", "\\|") for c in _row(r)) + " |")
    else:
        from rich.console import Console
        from rich.table import Table
        table = Table(title=f"{args.model} at {'x'.join(map(str, size))}: theoretical receptive fields")
        for c in TABLE_COLUMNS:
            table.add_column(c.replace("_", " "), no_wrap=c != "flags",
                             justify="right" if c in ("rf_size", "stride", "start") else "left")
        for r in records:
            table.add_row(*_row(r))
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(100, max(len(r["name"]) for r in records) + 90))
        console.print(table)
    return 0


def _parse_unit(text: str) -> tuple[int, ...]:
    if text in ("center", "centre"):
        return None
    try:
        return tuple(int(p) for p in text.replace("(", "").replace(")", "").split(",") if p.strip() != "")
    except ValueError:
        raise RFLensError(f"--unit {text!r} is not a comma-separated list of integers (e.g. 7,7)") from None


def _save_npy(path: str, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)
    atomic_write(path, write)


def cmd_unit(args) -> int:
    if args.mask_out and not args.mask_out.endswith(".npy"):
        raise RFLensError(f"--mask-out {args.mask_out!r} must end in .npy")
    unit_index = _parse_unit(args.unit)
    if args.method == "probe":
        model = load_model(args.model, parse_model_args(args.model_arg), device="cpu")
        size = parse_input_size(args.input_size) if args.input_size else default_input_size(args.model)
        analytic = analyze(load_model(args.model, parse_model_args(args.model_arg)), size)
        layer = analytic[args.layer]
        idx = layer._index(unit_index)
        probe = analyze(model, size, method="probe")
        unit = probe.layer(args.layer, layer.spatial_dims).unit(idx)
        is_global = layer.is_global
        rf_size, stride = None, None
    else:
        model, size = _model_and_size(args)
        analysis = analyze(model, size)
        layer = analysis[args.layer]
        if args.local:
            local = layer.local
            if local is None:
                raise RFLensError(f"layer '{args.layer}' has no local receptive field: every path to it "
                                  f"passes global context ({', '.join(layer.global_via[:2])})")
            layer = local
        unit = layer.unit(unit_index)
        is_global = layer.is_global
        rf_size, stride = layer.rf_size, layer.stride
    record = unit.to_dict(size, is_global)
    record["method"] = args.method
    if rf_size is not None:
        record["rf_size"] = list(rf_size)
        record["stride"] = list(stride)
    if args.mask_out:
        _save_npy(args.mask_out, unit.mask)
    if args.format == "json":
        print(dumps(record))
    else:
        lines = [
            f"model        {args.model} at {'x'.join(map(str, size))}",
            f"layer        {unit.layer}  (grid {'x'.join(map(str, layer.grid_shape)) or 'scalar'})",
            f"unit         {', '.join(map(str, unit.index))}",
            f"box          {' x '.join(f'[{a}, {b})' for a, b in unit.box)}  (clipped to the input)",
            f"unclipped    {' x '.join(f'[{a}, {b})' for a, b in unit.unclipped_box)}",
            f"center       {', '.join(map(str, unit.center))}",
            f"support      {unit.support_size} pixels",
        ]
        if rf_size is not None:
            lines.append(f"layer RF     {_fmt(rf_size)}, stride {_fmt(stride)}")
        if is_global:
            lines.append(f"global       yes, via {layer.global_via[0]}"
                         + (f" (+{len(layer.global_via) - 1} more)" if len(layer.global_via) > 1 else ""))
        print("\n".join(lines))
    return 0


def _output_path(args, default: str) -> str:
    if args.output:
        return args.output
    return re.sub(r"[^A-Za-z0-9._-]+", "_", default)


def _analysis(args, model_name: str | None = None):
    model, size = _model_and_size(args)
    a = analyze(model, size)
    a.model_name = model_name or args.model
    return a


def _picture_for(args, analysis):
    if not getattr(args, "image", None):
        return None
    from .images import load_image
    if len(analysis.spatial) != 2:
        raise RFLensError("--image needs a model with 2-D inputs")
    return load_image(args.image, analysis.spatial)


def cmd_show(args) -> int:
    from .plot import save, unit_figure
    analysis = _analysis(args)
    layer = analysis[args.layer]
    if args.local:
        layer = layer.local or _no_local(layer)
    unit = layer.unit(_parse_unit(args.unit))
    picture = _picture_for(args, analysis)
    fig = unit_figure(layer, unit, picture, args.model)
    path = _output_path(args, f"rf_{args.model}_{args.layer}_{'-'.join(map(str, unit.index))}.png")
    print(save(fig, path))
    return 0


def _no_local(layer):
    raise RFLensError(f"layer '{layer.name}' has no local receptive field: every path to it passes "
                      f"global context ({', '.join(layer.global_via[:2])})")


def cmd_grid(args) -> int:
    from .plot import grid_figure, save, select_layers
    analysis = _analysis(args)
    unit = _parse_unit(args.unit)
    if unit is None:
        raise RFLensError("--unit must be indices such as 3,3 for a grid of layers")
    fig = grid_figure(analysis, unit, select_layers(analysis, args.layers), args.model)
    print(save(fig, _output_path(args, f"grid_{args.model}_{'-'.join(map(str, unit))}.png")))
    return 0


def cmd_growth(args) -> int:
    from .plot import growth_figure, save
    analyses = {}
    for spec in args.models:
        model = load_model(spec, parse_model_args(args.model_arg))
        size = parse_input_size(args.input_size) if args.input_size else default_input_size(spec)
        analyses[f"{spec} ({'x'.join(map(str, size[1:]))})"] = analyze(model, size)
    fig = growth_figure(analyses, args.layers)
    print(save(fig, _output_path(args, "growth_" + "_".join(args.models) + ".png")))
    return 0


def cmd_overlay(args) -> int:
    from .plot import overlay_figure, save
    analysis = _analysis(args)
    picture = _picture_for(args, analysis)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    for n in layers:
        analysis[n]  # unknown names fail here, with close matches
    fig = overlay_figure(analysis, picture, layers, args.units, args.model)
    print(save(fig, _output_path(args, f"overlay_{args.model}.png")))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rflens", description="Exact receptive fields of PyTorch models.")
    p.add_argument("--version", action="version", version=f"rflens {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("model", help="torchvision architecture name (e.g. vgg16) or package.module:callable")
        sp.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: the model's usual size)")
        sp.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                        help="keyword argument for the model constructor (repeatable)")

    t = sub.add_parser("table", help="one row per layer: RF size, stride, start, flags")
    common(t)
    t.add_argument("--format", choices=["table", "json", "csv", "markdown"], default="table")
    t.set_defaults(func=cmd_table)

    u = sub.add_parser("unit", help="the exact receptive field of one unit")
    common(u)
    u.add_argument("--layer", required=True, help="layer name as listed by `rflens table`")
    u.add_argument("--unit", default="center", help="0-based unit index, e.g. 7,7 (default: center)")
    u.add_argument("--format", choices=["text", "json"], default="text")
    u.add_argument("--mask-out", metavar="PATH.npy", help="write the support mask as a .npy bool array")
    u.add_argument("--method", choices=["analytic", "probe"], default="analytic")
    u.add_argument("--local", action="store_true", help="ignore global-context paths (SE gates, ...)")
    u.set_defaults(func=cmd_unit)

    def output(sp):
        sp.add_argument("-o", "--output", help="picture to write: .png, .svg or .pdf (default: a name "
                        "from the arguments, in the current folder)")

    sh = sub.add_parser("show", help="picture: one unit's exact RF on the input or an image")
    common(sh)
    sh.add_argument("--layer", required=True)
    sh.add_argument("--unit", default="center", help="0-based unit index, e.g. 7,7 (default: center)")
    sh.add_argument("--image", help="draw on this picture (resized and centre-cropped to the input size)")
    sh.add_argument("--local", action="store_true", help="ignore global-context paths")
    output(sh)
    sh.set_defaults(func=cmd_show)

    g = sub.add_parser("grid", help="picture: one unit's RF in every selected layer")
    common(g)
    g.add_argument("--unit", required=True, help="0-based unit index; clamped on smaller grids")
    g.add_argument("--layers", default="conv,pool", help="op kinds (conv,pool), 'all', or a regex on names")
    output(g)
    g.set_defaults(func=cmd_grid)

    gr = sub.add_parser("growth", help="chart: RF size and stride against depth, several models")
    gr.add_argument("models", nargs="+", metavar="MODEL")
    gr.add_argument("--input-size", help="C x spatial for every model (default: each model's usual size)")
    gr.add_argument("--model-arg", action="append", metavar="KEY=VALUE")
    gr.add_argument("--layers", default="conv,pool", help="which layers count as depth")
    output(gr)
    gr.set_defaults(func=cmd_growth)

    ov = sub.add_parser("overlay", help="picture: RF boxes of a few units per layer on a photograph")
    common(ov)
    ov.add_argument("--image", required=True)
    ov.add_argument("--layers", required=True, help="comma-separated layer names")
    ov.add_argument("--units", default="center,corners", help="center, corners and/or i:j, comma-separated")
    output(ov)
    ov.set_defaults(func=cmd_overlay)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RFLensError as e:
        print(f"rflens: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rflens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        print(f"rflens: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in rflens; please report it with the command you ran.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
