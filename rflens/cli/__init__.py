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

from .. import __version__
from ..models.adapt import adapt, parse_model_inputs
from ..engine.analyze import analyze, parse_input_size
from ..errors import RFLensError
from ..files import atomic_write
from ..models.names import build_model, default_input_size, parse_model_args

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1


def _load(spec: str, args, device="meta", weigh=None):
    """The model MODEL names, adapted by --model-output/--model-input, and which weights it holds
    (None: its own initialisation).  ``weigh(model, note)`` may load weights into the model as
    built (before adapting, whose wrapper would change the state dict's keys) and give the note."""
    model, note = build_model(spec, parse_model_args(args.model_arg), device=device,
                              trust_checkpoint=args.trust_checkpoint)
    if weigh is not None:
        note = weigh(model, note)
    return adapt(model, args.model_output, parse_model_inputs(args.model_input)), note


def _model_and_size(args, device="meta"):
    return _load(args.model, args, device)[0], _size_for(args.model, args)


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
        model, size = _model_and_size(args, device="cpu")
        analytic = analyze(_load(args.model, args)[0], size)
        layer = analytic[args.layer]
        idx = layer.index(unit_index)
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


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _output_path(args, default: str) -> str:
    if args.output:
        return args.output
    return _safe_name(default)


def _analysis(args, model_name: str | None = None):
    model, size = _model_and_size(args)
    a = analyze(model, size)
    a.model_name = model_name or args.model
    return a


def _picture_for(args, analysis):
    if not getattr(args, "image", None):
        return None
    from ..methods.images import load_image
    if len(analysis.spatial) != 2:
        raise RFLensError("--image needs a model with 2-D inputs")
    return load_image(args.image, analysis.spatial)


def cmd_show(args) -> int:
    from ..plot import save, unit_figure
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
    from ..plot import grid_figure, save, select_layers
    analysis = _analysis(args)
    unit = _parse_unit(args.unit)
    if unit is None:
        raise RFLensError("--unit must be indices such as 3,3 for a grid of layers")
    fig = grid_figure(analysis, unit, select_layers(analysis, args.layers), args.model)
    print(save(fig, _output_path(args, f"grid_{args.model}_{'-'.join(map(str, unit))}.png")))
    return 0


def cmd_growth(args) -> int:
    from ..plot import growth_figure, save
    analyses = {}
    for spec in args.models:
        model = _load(spec, args)[0]
        size = _size_for(spec, args)
        analyses[f"{spec} ({'x'.join(map(str, size[1:]))})"] = analyze(model, size)
    fig = growth_figure(analyses, args.layers)
    print(save(fig, _output_path(args, "growth_" + "_".join(args.models) + ".png")))
    return 0


def cmd_overlay(args) -> int:
    from ..plot import overlay_figure, save
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

    def weigh(model, note):
        if args.weights:
            from ..models.checkpoints import load_weights
            return load_weights(model, args.weights, trust_checkpoint=args.trust_checkpoint).summary()
        if note is None:
            # a callable may load trained weights itself (or draw them from the seed)
            return (f"weights as built by {spec} (torch seed {args.seed})" if ":" in spec
                    else f"random weights (torch seed {args.seed})")
        return note
    return _load(spec, args, "cpu", weigh)


def _check_weights_flags(args, models: list[str]) -> None:
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
    from pathlib import Path
    return "=" in spec or Path(spec).is_file() or Path(spec).suffix.lower() in (".onnx", ".pt", ".pth")


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
    from ..methods.gradient import effective_field
    from ..methods.images import image_files
    from ..plot import erf_comparison_figure, erf_figure, save

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
            analysis = analyze(_load(spec, args)[0], _size_for(spec, args))
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
    from ..methods.gradient import gradient_field
    from ..plot import gradient_figure, save

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


# -- top images, empirical RFs and segmentations: Zhou et al. (2015), NetDissect ----------------

SETTINGS = "settings.json"  # beside scan.npz: what the scan's own record leaves out


def _normalize_arg(text: str | None):
    """``--normalize``: ``imagenet`` (None: the library's default), ``none`` ([0, 1] pixels),
    ``MEAN,STD`` for every channel, or ``M1,M2,M3,S1,S2,S3`` per channel."""
    if text is None or text.strip().lower() == "imagenet":
        return None
    if text.strip().lower() == "none":
        return (0.0, 1.0)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (2, 6):
        raise RFLensError(f"--normalize {text!r}: use imagenet, none, MEAN,STD (e.g. 0.5,0.5) or "
                          "M1,M2,M3,S1,S2,S3")
    half = len(values) // 2
    mean, std = values[:half], values[half:]
    if min(std) <= 0:
        raise RFLensError(f"--normalize {text!r}: the standard deviation must be positive")
    return (mean[0], std[0]) if half == 1 else (tuple(mean), tuple(std))


def _normalize_text(normalize) -> str:
    if normalize is None:
        return "ImageNet mean and std"
    mean, std = normalize
    return f"mean {_coords(np.atleast_1d(mean).tolist())}, std {_coords(np.atleast_1d(std).tolist())}"


def _jsonable(normalize):
    return None if normalize is None else json.loads(json.dumps(normalize))


def _read_settings(folder) -> dict | None:
    from pathlib import Path
    path = Path(folder) / SETTINGS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RFLensError(f"cannot read '{path}': {e}") from None


def _short(spec: str) -> str:
    """A model's name for a progress bar, which has no room for a path."""
    return spec.rpartition(":")[2] or spec


def _check_count(flag: str, value: int | None, least: int = 1) -> None:
    if value is not None and value < least:
        raise RFLensError(f"{flag} {value}: must be at least {least}")


def _target(model, layer: str, size):
    """The layer, checked by the library to be an (N, C, *grid) map, before any long job."""
    from ..methods.scan import channel_layer
    return channel_layer(model, layer, size)


def cmd_scan(args) -> int:
    from pathlib import Path

    from ..methods.images import image_files
    from ..methods.scan import top_images

    _check_weights_flags(args, [args.model])
    _check_count("--top-k", args.top_k)
    _check_count("--batch-size", args.batch_size)
    _check_count("--limit", args.limit)
    normalize = _normalize_arg(args.normalize)
    image_files(args.images)  # a missing or empty folder fails before any model is built
    device = _device_arg(args.device)
    out = Path(args.out or _safe_name(f"scan_{args.model}_{args.layer}"))
    if out.exists() and not out.is_dir():
        raise RFLensError(f"--out '{out}' is a file, not a folder")
    settings = _read_settings(out) if out.is_dir() else None
    state = "finished earlier" if (out / "scan.npz").exists() else (
        "resumed" if (out / "scan.partial.npz").exists() else "new")
    if settings is not None and state != "new":
        # the scan's own record leaves these out: another value would be answered with the old
        # scan, or resumed into a mix of both
        given = {"normalize": (_jsonable(normalize), _normalize_flag), "limit": (args.limit, str)}
        for key, (value, show) in given.items():
            if settings.get(key) != value:
                was = "no --limit" if key == "limit" and settings.get(key) is None else \
                    f"--{key} {show(settings.get(key))}"
                raise RFLensError(f"'{out}' holds a scan made with {was}; use the same, or another --out")
    size = _size_for(args.model, args)
    model, weights = _weighted_model(args.model, args)
    target = _target(model, args.layer, size)
    if not out.parent.exists():
        raise RFLensError(f"cannot make '{out}': folder '{out.parent}' does not exist")
    out.mkdir(exist_ok=True)
    record = {"model": args.model, "layer": target.name, "input_size": list(size), "normalize": _jsonable(normalize),
              "limit": args.limit, "weights": weights}
    if settings is None or state == "new":
        atomic_write(out / SETTINGS, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"))
    try:
        with _progress() as progress:
            task = progress.add_task(f"scanning {_short(args.model)} {target.name}", total=None)

            def report(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total)
            scan = top_images(model, args.layer, args.images, args.top_k, input_size=size, normalize=normalize,
                              limit=args.limit, batch_size=args.batch_size, device=device, out=out, progress=report)
    except KeyboardInterrupt:
        if (out / "scan.partial.npz").exists():
            print(f"rflens: the images scanned so far are kept in {out / 'scan.partial.npz'}; run the same "
                  "command to resume", file=sys.stderr)
        raise
    path = str(out / "scan.npz")
    if args.format == "json":
        print(dumps({**record, "k": scan.k, "channels": scan.channels, "grid": list(scan.grid), "seen": scan.seen,
                     "skipped": len(scan.skipped), "skipped_files": [list(x) for x in scan.skipped],
                     "state": state, "scan": path}))
        return 0
    lines = [
        f"model        {args.model} at {'x'.join(map(str, size))}, {weights}",
        f"layer        {target.name}: {scan.channels} channels on a {'x'.join(map(str, scan.grid))} grid, "
        f"top {scan.k} images each",
        f"images       {scan.seen} scanned in {args.images}" + (f"; {len(scan.skipped)} skipped" if scan.skipped
                                                                  else "") + f" ({_normalize_text(normalize)})",
        *(f"skipped      {name}: {why}" for name, why in scan.skipped),
        f"scan         {path}" + {"new": "", "resumed": "  (resumed)",
                                   "finished earlier": "  (finished earlier: delete it to scan again)"}[state],
    ]
    print("\n".join(lines))
    return 0


def _normalize_flag(value) -> str:
    if value is None:
        return "imagenet"
    mean, std = value
    return ",".join(str(v) for v in (np.atleast_1d(mean).tolist() + np.atleast_1d(std).tolist()))


def _parse_units(text: str | None, layer, flag: str = "--units") -> list[int]:
    """``0-15``, ``0,3,7`` or a mix; None: the first 16 channels (all of a layer is often
    hundreds, each with k images of occluded forwards)."""
    channels = layer.output_shape[1]
    if text is None:
        return list(range(min(16, channels)))
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if re.fullmatch(r"\d+\s*-\s*\d+", part):
                a, b = (int(v) for v in part.split("-"))
                if b < a:
                    raise ValueError
                units += range(a, b + 1)
            else:
                units.append(int(part))
        except ValueError:
            raise RFLensError(f"{flag} {text!r}: use channel numbers such as 0-15 or 0,3,7") from None
    bad = [u for u in units if not 0 <= u < channels]
    if bad:
        raise RFLensError(f"{flag} {text}: channel {bad[0]} is outside layer '{layer.name}', which has {channels} "
                          f"channels (0..{channels - 1})")
    return list(dict.fromkeys(units))


class _ScanInputs:
    """The scan named by ``--scan`` (checked against the model and flags) or the folder named by
    ``--images``, with the input size and normalisation to use."""

    def __init__(self, args, model, weights: str):
        from ..methods.running import fingerprint
        from ..methods.scan import Scan

        self.scan = None
        self.normalize = _normalize_arg(args.normalize)
        size = parse_input_size(args.input_size) if args.input_size else None
        if getattr(args, "scan", None):
            from pathlib import Path
            folder = Path(args.scan)
            if folder.is_dir() and not (folder / "scan.npz").exists() and (folder / "scan.partial.npz").exists():
                raise RFLensError(f"the scan in '{folder}' is not finished: run the `rflens scan` command that "
                                  "made it again to complete it")
            self.scan = Scan.load(folder)
            scanned = tuple(self.scan.config.get("size", ()))
            if size is not None and scanned and size != scanned:
                raise RFLensError(f"--input-size {args.input_size}: the scan in '{args.scan}' was made at "
                                  f"{'x'.join(map(str, scanned))}")
            size = scanned or size or _size_for(args.model, args)
            settings = _read_settings(folder) if folder.is_dir() else None
            if settings is not None:
                if args.normalize is None:
                    self.normalize = settings.get("normalize")
                    if self.normalize is not None:
                        self.normalize = tuple(tuple(v) if isinstance(v, list) else v for v in self.normalize)
                elif _jsonable(self.normalize) != settings.get("normalize"):
                    raise RFLensError(f"--normalize {args.normalize}: the scan in '{args.scan}' was made with "
                                      f"--normalize {_normalize_flag(settings.get('normalize'))}")
            if self.scan.config.get("model") not in (None, fingerprint(model)):
                made = f" ({settings['weights']})" if settings and settings.get("weights") else ""
                raise RFLensError(f"the scan in '{args.scan}' was made with other weights{made} than these "
                                  f"({weights}); pass the same model and --weights")
            if self.scan.layer != args.layer:
                _target(model, args.layer, size)  # an unknown name fails with close matches first
                raise RFLensError(f"the scan in '{args.scan}' is of layer '{self.scan.layer}', not '{args.layer}'")
        self.size = size or _size_for(args.model, args)
        self.images = getattr(args, "images", None)

    def k(self, top_k: int | None) -> int:
        if self.scan is None:
            return top_k or 10
        if top_k is not None and top_k > self.scan.k:
            raise RFLensError(f"--top-k {top_k}: the scan kept {self.scan.k} images per channel; use at most "
                              f"{self.scan.k}, or scan again with --top-k {top_k}")
        return top_k or self.scan.k

    def files(self) -> list:
        """The scanned files, for the library calls that look images up by position."""
        from pathlib import Path
        return [Path(n) for n in self.scan.names]


def _occluder(args, size):
    from ..methods.occlusion import Occluder
    occluder = Occluder(args.occluder, args.stride, args.fill, args.seed)
    occluder.grid(tuple(size[1:]))  # too big for the input: fails before the long job
    return occluder


def _scan_for(args, model, inputs: _ScanInputs, k: int, device, progress):
    """The given scan, or a scan of ``--images`` made now (kept in memory)."""
    from ..methods.scan import top_images
    if inputs.scan is not None:
        return inputs.scan
    task = progress.add_task(f"scanning {_short(args.model)} {args.layer}", total=None)

    def report(done: int, total: int | None) -> None:
        progress.update(task, completed=done, total=total)
    return top_images(model, args.layer, args.images, k, input_size=inputs.size, normalize=inputs.normalize,
                      batch_size=16, device=device, progress=report)


def cmd_empirical(args) -> int:
    from ..methods.images import image_files
    from ..methods.occlusion import empirical_field
    from ..plot import empirical_figure, empirical_grid_figure, save

    _check_weights_flags(args, [args.model])
    _check_count("--top-k", args.top_k)
    _check_count("--batch-size", args.batch_size)
    if args.images:
        image_files(args.images)
    output = _output_path(args, f"empirical_{args.model}_{args.layer}.png")
    _check_output(output)
    if args.checkpoint and not args.checkpoint.endswith(".npz"):
        raise RFLensError(f"--checkpoint {args.checkpoint!r} must end in .npz")
    device = _device_arg(args.device)
    model, weights = _weighted_model(args.model, args)
    inputs = _ScanInputs(args, model, weights)
    target = _target(model, args.layer, inputs.size)
    units = _parse_units(args.units, target)
    occluder = _occluder(args, inputs.size)
    k = inputs.k(args.top_k)
    with _progress() as progress:
        scan = _scan_for(args, model, inputs, k, device, progress)
        task = progress.add_task(f"occluding {len(units)} units", total=None)

        def report(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)
        result = empirical_field(model, args.layer, units, inputs.files() if inputs.scan is not None else args.images,
                                 scan=scan, k=k, occluder=occluder, discrepancy=args.discrepancy,
                                 input_size=inputs.size, normalize=inputs.normalize, batch_size=args.batch_size,
                                 device=device, progress=report, checkpoint=args.checkpoint)
    if len(units) == 1:
        fig = empirical_figure(result.fields[units[0]], occluder, args.discrepancy)
    else:
        fig = empirical_grid_figure(result, units[:16], title=_short(args.model))
    path = str(save(fig, output))
    row = result.to_dict()
    sizes = {c: f.size for c, f in result.fields.items()}
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, "input_size": list(inputs.size),
                     "scan": args.scan, **row, "unit_sizes": {str(c): s for c, s in sizes.items()}, "figure": path}))
        return 0
    theo = _fmt(result.theoretical)
    dead = [c for c, s in sizes.items() if s == 0]
    mean = ("n/a (no occluder changed any unit)" if row["empirical_mean"] is None
            else f"{row['empirical_mean']:.2f} ± {row['empirical_std']:.2f} px")
    lines = [
        f"model        {args.model} at {'x'.join(map(str, inputs.size))}, {weights}",
        f"top images   {k} per unit from " + (f"the scan in {args.scan}" if args.scan else f"a scan of {args.images}")
        + f" ({scan.seen} images)",
        f"occluder     {occluder.size}x{occluder.size}, stride {occluder.stride}, {occluder.fill} fill "
        f"(seed {occluder.seed}); discrepancy {args.discrepancy}",
        f"layer        {result.layer}",
        f"theoretical  {theo} px",
        f"empirical    {mean} over {len(result.sizes)} units  (smallest centred square holding "
        f"{row['mass']:.0%} of the averaged map)",
        "unit sizes   " + ", ".join(f"{c}: {s}" for c, s in sizes.items()),
    ]
    if dead:
        lines.append(f"left out     {', '.join(map(str, dead))}: no occluder changed these units")
    lines.append("computed     " + (f"on crops of the images, not incrementally: {result.fallback}" if result.fallback
                                    else "by incremental re-inference of each occluder's projective field"))
    print("\n".join(lines))
    print(path)
    return 0


def cmd_segment(args) -> int:
    from ..plot import save, segment_sheet
    from ..methods.segment import segment

    _check_weights_flags(args, [args.model])
    _check_count("--top-k", args.top_k)
    methods = ["netdissect", "occlusion"] if args.method == "both" else [args.method]
    output = _output_path(args, f"segment_{args.model}_{args.layer}_{args.unit}.png")
    _check_output(output)
    device = _device_arg(args.device)
    model, weights = _weighted_model(args.model, args)
    inputs = _ScanInputs(args, model, weights)
    target = _target(model, args.layer, inputs.size)
    _parse_units(str(args.unit), target, "--unit")
    occluder = _occluder(args, inputs.size) if "occlusion" in methods else None
    k = inputs.k(args.top_k)
    segments = []
    with _progress() as progress:
        task = progress.add_task(f"segmenting channel {args.unit}", total=len(methods))
        for i, method in enumerate(methods):
            # the scanned files, not the scan, as images: segment() hands a lone scan on to
            # empirical_field as images, which refuses it (see the report on rflens/segment.py)
            segments += segment(model, args.layer, args.unit, inputs.files(), scan=inputs.scan, k=k, method=method,
                                occluder=occluder, input_size=inputs.size, normalize=inputs.normalize, device=device)
            progress.update(task, completed=i + 1)
    title = f"{_short(args.model)} · {target.name} · channel {args.unit}: top {k} of {inputs.scan.seen} images"
    path = str(save(segment_sheet(segments, title), output))
    records = [{"method": s.method, "rank": rank, "image": s.image.name, "score": round(s.image.score, 5),
                "where": list(s.image.where), "level": round(s.level, 5), "mask_pixels": int(s.mask.sum()),
                "mask_fraction": round(float(s.mask.mean()), 4)}
               for method in methods for rank, s in enumerate(x for x in segments if x.method == method)]
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, "layer": target.name, "channel": args.unit,
                     "scan": args.scan, "segments": records, "figure": path}))
        return 0
    lines = [f"model        {args.model} at {'x'.join(map(str, inputs.size))}, {weights}",
             f"unit         {target.name}, channel {args.unit}: top {k} images of the scan in {args.scan}"]
    for method in methods:
        mine = [r for r in records if r["method"] == method]
        how = (f"activation >= {mine[0]['level']:.4g} (the scan's top 0.5%)" if method == "netdissect"
               else "|activation change| >= half of each map's maximum")
        lines.append(f"{method:<12} {how}")
        lines += [f"  {r['rank'] + 1:>2}. {os.path.basename(r['image'])}  score {r['score']:.4g}, "
                  f"{r['mask_pixels']} px in the mask ({r['mask_fraction']:.1%})" for r in mine]
    print("\n".join(lines))
    print(path)
    return 0


MODEL_HELP = ("a torchvision name (vgg16), timm:NAME, package.module:callable or path/to/file.py:callable, "
              "ARCH=WEIGHTS (resnet18=w.safetensors), a TorchScript archive (.pt) or an ONNX file (.onnx)")


# -- the interactive viewer ---------------------------------------------------------------------

def cmd_view(args) -> int:
    from ..viewer import Scene, export_html, serve
    if args.html and (args.port is not None or args.host is not None or args.weights):
        raise RFLensError("--html writes a static page (geometry only, no server): leave out --port, --host "
                          "and --weights")
    if args.html and not args.html.lower().endswith((".html", ".htm")):
        raise RFLensError(f"--html {args.html!r} must end in .html")
    size = _size_for(args.model, args)
    if args.html:  # built on the meta device: the geometry needs no weights
        scene = Scene(_load(args.model, args)[0], size, args.image, args.model)
        print(export_html(scene, args.html))
        return 0
    _check_weights_flags(args, [args.model])
    model, weights = _weighted_model(args.model, args)
    server = serve(Scene(model, size, args.image, args.model, weights), args.host or "127.0.0.1",
                   8765 if args.port is None else args.port, _device_arg(args.device))
    if not server.loopback:
        print(f"rflens: warning: serving on {args.host}, reachable from other machines", file=sys.stderr)
    print(f"rflens view: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rflens", description="Exact receptive fields of PyTorch models.")
    p.add_argument("--version", action="version", version=f"rflens {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def model_options(sp):
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

    def common(sp):
        sp.add_argument("model", help=MODEL_HELP)
        sp.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: the model's usual size)")
        model_options(sp)

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
    model_options(gr)
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

    def weights(sp, channel: bool = True, seed: str = "seed of the random weights (and of --noise inputs)"):
        sp.add_argument("--weights", metavar="PATH", help="load these weights (safetensors, torch.save state "
                        "dict or TorchScript) instead of random ones")
        sp.add_argument("--seed", type=int, default=0, help=seed)
        sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model runs (auto: CUDA when present)")
        if channel:
            sp.add_argument("--channel", type=int, help="one output channel (default: the sum over channels)")

    e = sub.add_parser("erf", help="effective RF: the mean gradient map over many inputs (Luo et al. 2016)")
    e.add_argument("models", nargs="+", metavar="MODEL", help=MODEL_HELP)
    e.add_argument("--layer", required=True, help="layer name, or several comma-separated (compared side by side)")
    e.add_argument("--unit", default="center", help="0-based unit index, e.g. 7,7 (default: center)")
    source = e.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="a folder of images (recursive; unreadable files skipped)")
    source.add_argument("--noise", type=int, metavar="N", help="N Gaussian noise inputs (the default, 32)")
    e.add_argument("--limit", type=int, metavar="N", help="use at most N inputs")
    e.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: each model's usual size)")
    model_options(e)
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

    def images(sp, required: bool = False):
        sp.add_argument("--input-size", help="C x spatial, e.g. 3x48x48: images are resized and centre-cropped "
                        "to it (default: the model's usual size, or the scan's)")
        model_options(sp)
        sp.add_argument("--normalize", metavar="MEAN,STD",
                        help="pixel normalisation, on [0, 1] pixels: imagenet (the default), none, MEAN,STD for "
                        "every channel (MTCNN: 0.5,0.5) or M1,M2,M3,S1,S2,S3; with --scan: the scan's")

    def occluders(sp):
        sp.add_argument("--occluder", type=int, default=11, metavar="PX", help="occluder side in pixels (11)")
        sp.add_argument("--stride", type=int, default=3, metavar="PX", help="occluder step in pixels (3)")
        sp.add_argument("--fill", choices=["random", "zeros", "mean", "blur"], default="random",
                        help="what an occluder shows (random: uniform noise in the image's range)")

    seed = "seed of the random weights and of random occluder fills"
    sc = sub.add_parser("scan", help="top images: each channel's K most activating images in a folder "
                        "(resumable)")
    sc.add_argument("model", help=MODEL_HELP)
    sc.add_argument("--layer", required=True)
    sc.add_argument("--images", required=True, metavar="DIR",
                    help="a folder of images (recursive; unreadable files are skipped and listed)")
    sc.add_argument("--top-k", type=int, default=10, metavar="K", help="images kept per channel (10)")
    sc.add_argument("--out", metavar="DIR", help="folder for scan.npz (default: scan_MODEL_LAYER); progress is "
                    "kept there, so the same command resumes an interrupted scan")
    sc.add_argument("--limit", type=int, metavar="N", help="scan only the first N files")
    sc.add_argument("--batch-size", type=int, default=16)
    sc.add_argument("--format", choices=["text", "json"], default="text")
    images(sc)
    weights(sc, channel=False, seed="seed of the random weights")
    sc.set_defaults(func=cmd_scan)

    em = sub.add_parser("empirical", help="empirical RF by occlusion on top images (Zhou et al. 2015): "
                        "theoretical vs empirical size")
    em.add_argument("model", help=MODEL_HELP)
    em.add_argument("--layer", required=True)
    where = em.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", metavar="DIR", help="a folder of images, scanned first (kept in memory)")
    where.add_argument("--scan", metavar="DIR", help="a folder made by `rflens scan`")
    em.add_argument("--units", metavar="LIST", help="channels: 0-15, 0,3,7 or a mix (default: the first 16)")
    em.add_argument("--top-k", type=int, metavar="K", help="top images per unit (default: 10, or all the scan kept)")
    em.add_argument("--discrepancy", choices=["abs", "drop"], default="abs",
                    help="abs: |activation change| (default); drop: signed activation minus occluded activation")
    em.add_argument("--batch-size", type=int, default=64, help="occluded images per forward")
    em.add_argument("--checkpoint", metavar="PATH.npz", help="save each image's results as they come; rerun the "
                    "same command to resume after an interruption")
    em.add_argument("--format", choices=["text", "json"], default="text")
    occluders(em)
    images(em)
    weights(em, channel=False, seed=seed)
    output(em)
    em.set_defaults(func=cmd_empirical)

    sg = sub.add_parser("segment", help="segmentations of one channel's top images (NetDissect and/or occlusion)")
    sg.add_argument("model", help=MODEL_HELP)
    sg.add_argument("--layer", required=True)
    sg.add_argument("--unit", type=int, required=True, metavar="C", help="the channel (a number, not a position)")
    sg.add_argument("--scan", required=True, metavar="DIR", help="a folder made by `rflens scan` (NetDissect's "
                    "threshold is the top 0.5%% of the channel's activations over the whole scan)")
    sg.add_argument("--method", choices=["netdissect", "occlusion", "both"], default="netdissect")
    sg.add_argument("--top-k", type=int, metavar="K", help="top images (default: all the scan kept)")
    sg.add_argument("--format", choices=["text", "json"], default="text")
    occluders(sg)
    images(sg)
    weights(sg, channel=False, seed=seed)
    output(sg)
    sg.set_defaults(func=cmd_segment)

    vw = sub.add_parser("view", help="interactive viewer in the browser: click a unit, see what it sees")
    common(vw)
    vw.add_argument("--image", help="show this picture (resized and centre-cropped to the input size)")
    vw.add_argument("--port", type=int, help="port to listen on (default 8765; 0: any free port)")
    vw.add_argument("--host", help="address to listen on (default 127.0.0.1, this machine only)")
    vw.add_argument("--html", metavar="PATH.html", help="write a self-contained static page instead of serving")
    weights(vw, channel=False)
    vw.set_defaults(func=cmd_view)
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
