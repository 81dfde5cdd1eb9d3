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


# -- gradients with the model's own weights: erf and grad -------------------------------------

def _device_arg(text: str):
    """``None`` lets the library choose (CUDA when present)."""
    if text == "auto":
        return None
    if text == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise RFLensError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return text


def _check_output(path: str) -> None:
    """Refuse a name ``save`` would refuse before a long computation, not after it."""
    from pathlib import Path
    p = Path(path)
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise RFLensError(f"cannot write '{path}': use a .png, .svg or .pdf name")
    if not p.parent.exists():
        raise RFLensError(f"cannot write '{path}': folder '{p.parent}' does not exist")


def _size_for(spec: str, args) -> tuple[int, ...]:
    return parse_input_size(args.input_size) if args.input_size else default_input_size(spec)


def _weighted_model(spec: str, args):
    """The model with real values, and a line saying which: ``--weights`` loaded, or
    torchvision's random initialisation drawn from ``--seed``, so that two runs (and a resumed
    checkpoint, which checks the weights) see the same network."""
    import torch
    torch.manual_seed(args.seed)
    model = load_model(spec, parse_model_args(args.model_arg), device="cpu")
    if not args.weights:
        return model, f"random weights (torch seed {args.seed})"
    from .checkpoints import load_weights
    report = load_weights(model, args.weights, trust_checkpoint=args.trust_checkpoint)
    return model, report.summary()


def _check_weights_flags(args, models: list[str]) -> None:
    if args.weights and len(models) > 1:
        raise RFLensError(f"--weights loads one file into one model, but {len(models)} models were given "
                          f"({', '.join(models)}); run one model per command")
    if args.trust_checkpoint and not args.weights:
        raise RFLensError("--trust-checkpoint only applies to a file given with --weights")


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _progress():
    """A progress bar with ETA on stderr, only on a terminal: stdout stays clean for JSON and
    captured logs get no control codes."""
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    terminal = _stderr_is_terminal()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(),
                    console=Console(stderr=True, force_terminal=terminal or None), disable=not terminal)


def _coords(values, digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v)
                     for v in values)


def _per_axis(values, digits: int = 2) -> str:
    return " x ".join(f"{v:.{digits}f}" for v in values)


def _ratios(ratios: dict) -> str:
    return ", ".join(f"{int(t * 100)}%: " + ("not reached" if r is None else f"{r[1]:.3f} (side {r[0]})")
                     for t, r in ratios.items())


def _box_text(box) -> str:
    return " x ".join(f"[{a}, {b})" for a, b in box)


def _unit_line(layer: str, unit, channel) -> str:
    which = "all channels" if channel is None else f"channel {channel}"
    return f"{layer}, unit {', '.join(map(str, unit))} ({which})"


def _erf_text(spec: str, size, weights: str, f) -> str:
    image_centre = tuple((n - 1) / 2 for n in f.heat.shape)
    note = ""
    if any(abs(a - b) > 1e-9 for a, b in zip(f.rf_center, image_centre)):
        note = f"  (not the image centre, {_coords(image_centre)}: compare the ERF with this)"
    offset = ", ".join(f"{o:+.2f}" for o in f.offset)
    lines = [
        f"model          {spec} at {'x'.join(map(str, size))}, {weights}",
        f"layer          {_unit_line(f.layer, f.unit, f.channel)}, mode {f.mode}",
        f"inputs         {f.count} used: {f.source}" + (f"; {len(f.skipped)} skipped" if f.skipped else ""),
        f"RF box         {_box_text(f.rf.box)}  (theoretical, clipped to the input)",
        f"RF centre      {_coords(f.rf_center)}{note}",
        f"centre of mass {', '.join(f'{c:.2f}' for c in f.center_of_mass)}  (offset {offset})",
        f"sigma          {_per_axis(f.sigma)} px  (moment Gaussian)",
        "mass radii     " + ", ".join(f"{int(p * 100)}%: {r:.1f} px" for p, r in f.mass_radii.items()),
        f"4 sigma / TRF  {_per_axis(f.trf_ratio)}  (Gaussian extent over the theoretical RF's)",
        f"area ratio     {_ratios(f.area_ratio)}  (RepLKNet: log scale, square at the image centre)",
        f"linear area    {_ratios(f.linear_area_ratio)}  (linear mass, square at the RF centre)",
    ]
    lines += [f"skipped        {path}: {why}" for path, why in f.skipped]
    return "\n".join(lines)


def _erf_record(spec: str, weights: str, f) -> dict:
    return {"model": spec, "weights": weights, **f.to_dict(),
            "skipped_files": [[path, why] for path, why in f.skipped]}


def cmd_erf(args) -> int:
    from .gradient import effective_field
    from .images import image_files
    from .plot import erf_comparison_figure, erf_figure, save

    models = list(dict.fromkeys(args.models))
    layers = list(dict.fromkeys(n.strip() for n in args.layer.split(",") if n.strip()))
    if not layers:
        raise RFLensError("--layer needs at least one layer name")
    _check_weights_flags(args, models)
    pairs = [(m, layer) for m in models for layer in layers]
    if args.checkpoint:
        if len(pairs) > 1:
            raise RFLensError("--checkpoint resumes one computation: give one MODEL and one --layer with it")
        if not args.checkpoint.endswith(".npz"):
            raise RFLensError(f"--checkpoint {args.checkpoint!r} must end in .npz")
    if args.noise is not None and args.noise < 1:
        raise RFLensError(f"--noise {args.noise}: the number of noise inputs must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise RFLensError(f"--limit {args.limit}: use at least 1 input")
    if args.batch_size < 1:
        raise RFLensError(f"--batch-size {args.batch_size}: must be at least 1")
    if args.images:
        image_files(args.images)  # a missing or empty folder fails before any model is built
    inputs = args.images or (args.noise if args.noise is not None else 32)
    unit = _parse_unit(args.unit)
    scale = args.scale or ("both" if len(pairs) == 1 else "log")
    output = _output_path(args, f"erf_{'_'.join(models)}_{'-'.join(layers)}.png")
    _check_output(output)
    device = _device_arg(args.device)
    if len(pairs) > 1:  # a typo in the last pair fails now, not after the others are computed
        for spec in models:
            analysis = analyze(load_model(spec, parse_model_args(args.model_arg)), _size_for(spec, args))
            for name in layers:
                analysis[name].unit(unit)

    results = []
    try:
        with _progress() as progress:
            for spec in models:
                model, weights = _weighted_model(spec, args)
                size = _size_for(spec, args)
                for name in layers:
                    task = progress.add_task(f"{spec} {name}", total=None)

                    def report(done: int, total: int | None, task=task) -> None:
                        progress.update(task, completed=done, total=total)
                    field = effective_field(model, name, "center" if unit is None else unit, inputs,
                                            input_size=size, channel=args.channel, mode=args.mode,
                                            limit=args.limit, batch_size=args.batch_size, seed=args.seed,
                                            device=device, progress=report, checkpoint=args.checkpoint)
                    results.append((spec, size, weights, field))
    except KeyboardInterrupt:
        if args.checkpoint:
            print(f"rflens: the inputs done so far are kept in {args.checkpoint}; run the same command "
                  "to resume", file=sys.stderr)
        raise

    if len(results) == 1:
        fig = erf_figure(results[0][3], scale=scale)
    else:
        def label(spec: str, name: str) -> str:
            if len(models) > 1 and len(layers) > 1:
                return f"{spec} · {name}"
            return spec if len(models) > 1 else name
        fig = erf_comparison_figure({label(s, f.layer): f for s, _, _, f in results}, scale=scale)
    path = str(save(fig, output))
    if args.format == "json":
        records = [{**_erf_record(s, w, f), "figure": path} for s, _, w, f in results]
        print(dumps(records[0] if len(records) == 1 else records))
    else:
        print("\n\n".join(_erf_text(*r) for r in results))
        print(path)
    return 0


def cmd_grad(args) -> int:
    from .gradient import gradient_field
    from .plot import gradient_figure, save

    _check_weights_flags(args, [args.model])
    unit = _parse_unit(args.unit)
    unit_name = "center" if unit is None else "-".join(map(str, unit))
    output = _output_path(args, f"grad_{args.model}_{args.layer}_{unit_name}.png")
    _check_output(output)
    device = _device_arg(args.device)
    size = _size_for(args.model, args)
    model, weights = _weighted_model(args.model, args)
    gf = gradient_field(model, args.layer, unit, input=args.image, channel=args.channel, input_size=size,
                        device=device)
    path = str(save(gradient_figure(gf), output))
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, **gf.to_dict(), "figure": path}))
        return 0
    support = int(gf.rf.mask.sum())
    nonzero = int(gf.nonzero.sum())
    why = gf.explain() or ["the gradient reaches every pixel of the theoretical RF"]
    lines = [
        f"model        {args.model} at {'x'.join(map(str, size))}, {weights}",
        f"layer        {_unit_line(gf.layer, gf.unit, gf.channel)}",
        f"input        {gf.input_kind}",
        f"RF box       {_box_text(gf.rf.box)}  (theoretical, clipped to the input)",
        f"support      {support} pixels in the theoretical RF",
        f"nonzero      {nonzero} pixels with a nonzero gradient "
        f"({100 * nonzero / max(1, support):.1f}% of the support)",
        f"outside      {int(gf.outside.sum())} pixels with a gradient outside the theoretical RF",
        "missed       " + ", ".join(f"{int(m.sum())} {cause}" for cause, m in gf.missed.items()),
        f"why          {why[0]}",
        *(f"             {w}" for w in why[1:]),
    ]
    print("\n".join(lines))
    print(path)
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

    def weights(sp):
        sp.add_argument("--weights", metavar="PATH", help="load these weights (safetensors, torch.save state "
                        "dict or TorchScript) instead of random ones")
        sp.add_argument("--trust-checkpoint", action="store_true",
                        help="allow a --weights file that pickles Python objects (runs its code: trusted files only)")
        sp.add_argument("--seed", type=int, default=0, help="seed of the random weights (and of --noise inputs)")
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where gradients are computed (auto: CUDA when present)")
        sp.add_argument("--channel", type=int, help="one output channel (default: the sum over channels)")

    e = sub.add_parser("erf", help="effective RF: the mean gradient map over many inputs (Luo et al. 2016)")
    e.add_argument("models", nargs="+", metavar="MODEL",
                   help="torchvision architecture name(s) or package.module:callable")
    e.add_argument("--layer", required=True, help="layer name, or several comma-separated (compared side by side)")
    e.add_argument("--unit", default="center", help="0-based unit index, e.g. 7,7 (default: center)")
    source = e.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="a folder of images (recursive; unreadable files skipped)")
    source.add_argument("--noise", type=int, metavar="N", help="N Gaussian noise inputs (the default, 32)")
    e.add_argument("--limit", type=int, metavar="N", help="use at most N inputs")
    e.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: each model's usual size)")
    e.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                   help="keyword argument for the model constructor (repeatable)")
    e.add_argument("--mode", choices=["luo", "replknet"], default="luo",
                   help="luo: |d unit/d input| summed over channels; replknet: RepLKNet's definition")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--checkpoint", metavar="PATH.npz",
                   help="keep the running sum here after every batch; the same command resumes from it")
    e.add_argument("--scale", choices=["linear", "log", "both"],
                   help="colour scale (default: both for one field, log for a comparison)")
    e.add_argument("--format", choices=["text", "json"], default="text")
    weights(e)
    output(e)
    e.set_defaults(func=cmd_erf)

    gd = sub.add_parser("grad", help="gradient RF of one unit for one input, missing pixels explained")
    common(gd)
    gd.add_argument("--layer", required=True)
    gd.add_argument("--unit", required=True, help="0-based unit index, e.g. 7,7, or center")
    gd.add_argument("--image", help="the input: this picture (resized, centre-cropped, ImageNet-normalised); "
                    "default: zeros")
    gd.add_argument("--format", choices=["text", "json"], default="text")
    weights(gd)
    output(gd)
    gd.set_defaults(func=cmd_grad)
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
