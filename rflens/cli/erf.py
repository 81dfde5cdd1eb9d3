"""``rflens erf``: effective receptive fields (Luo et al. 2016), the mean gradient map over many
inputs; several models or layers are compared side by side.

    rflens erf resnet50 --layer layer3 --images photos/ --limit 500
"""

from __future__ import annotations

import sys

import rflens
from rflens import methods
from rflens.errors import RFLensError
from rflens.files import check_writable

from .common import (BATCH_HELP, MODEL_HELP, UNIT_HELP, box_text, check_weights_flags, checked_output, coords, device_arg,
                     dumps, format_option, load, model_line, model_source_options, name_of, output_option,
                     parse_unit, per_axis, progress, report, size_for, tracker, unit_line, weighted_model,
                     weights_options)


# shown under `rflens erf --help`
EXAMPLES = [
    'rflens erf resnet18 --layer layer2,layer3 --noise 8',
    'rflens erf resnet50=resnet50.safetensors --layer layer4 --images photos/ --limit 200',
    'rflens erf resnet18 resnet50 --layer layer3 --scale log -o erf.png',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("erf", help="effective RF: the mean gradient map over many inputs (Luo et al. 2016)")
    sp.add_argument("models", nargs="+", metavar="MODEL", help=MODEL_HELP)
    sp.add_argument("--layer", required=True, help="layer name, or several comma-separated (compared side by side)")
    sp.add_argument("--unit", default="center", help=UNIT_HELP)
    source = sp.add_mutually_exclusive_group()
    source.add_argument("--images", metavar="DIR", help="a folder of images (recursive; unreadable files skipped)")
    source.add_argument("--noise", type=int, metavar="N", help="N Gaussian noise inputs (the default, 32)")
    sp.add_argument("--limit", type=int, metavar="N", help="use at most N inputs")
    sp.add_argument("--input-size", help="C x spatial, e.g. 3x224x224 (default: each model's usual size)")
    model_source_options(sp)
    sp.add_argument("--mode", choices=["luo", "replknet"], default="luo",
                    help="luo: |d unit/d input| summed over channels; replknet: RepLKNet's definition")
    sp.add_argument("--batch-size", type=int, default=16, metavar="N", help=BATCH_HELP.format(16))
    sp.add_argument("--checkpoint", metavar="PATH.npz",
                    help="keep the running sum here after every batch; the same command resumes from it")
    sp.add_argument("--scale", choices=["linear", "log", "both"],
                    help="colour scale (default: both for one field, log for a comparison)")
    format_option(sp)
    weights_options(sp)
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import erf_comparison_figure, erf_figure, save

    models = list(dict.fromkeys(args.models))
    layers = list(dict.fromkeys(n.strip() for n in args.layer.split(",") if n.strip()))
    if not layers:
        raise RFLensError("--layer needs at least one layer name")
    check_weights_flags(args, models)
    pairs = [(m, layer) for m in models for layer in layers]
    if args.checkpoint:
        if len(pairs) > 1:
            raise RFLensError("--checkpoint resumes one computation: give one MODEL and one --layer with it")
        if not args.checkpoint.endswith(".npz"):
            raise RFLensError(f"--checkpoint {args.checkpoint!r} must end in .npz")
        check_writable(args.checkpoint)
    if args.noise is not None and args.noise < 1:
        raise RFLensError(f"--noise {args.noise}: the number of noise inputs must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise RFLensError(f"--limit {args.limit}: use at least 1 input")
    methods.check_count("--batch-size", args.batch_size)
    if args.images:
        methods.image_files(args.images)  # a missing or empty folder fails before any model is built
    inputs = args.images or (args.noise if args.noise is not None else 32)
    unit = parse_unit(args.unit)
    scale = args.scale or ("both" if len(pairs) == 1 else "log")
    output = checked_output(args, f"erf_{'_'.join(map(name_of, models))}_{'-'.join(layers)}.png")
    device = device_arg(args.device)
    if len(pairs) > 1:  # a typo in the last pair fails now, not after the others are computed
        for spec in models:
            analysis = rflens.analyze(load(spec, args)[0], size_for(spec, args))
            for name in layers:
                analysis[name].unit(unit)

    results = []
    try:
        with progress() as bars:
            for spec in models:
                model, weights = weighted_model(spec, args)
                size = size_for(spec, args)
                for name in layers:
                    field = rflens.effective_field(
                        model, name, "center" if unit is None else unit, inputs, input_size=size,
                        channel=args.channel, mode=args.mode, limit=args.limit, batch_size=args.batch_size,
                        seed=args.seed, device=device, progress=tracker(bars, f"{spec} {name}", unit="input"),
                        checkpoint=args.checkpoint)
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
    path = str(save(fig, output)) if output else None
    if args.format == "json":
        records = [{"model": s, "weights": w, **f.to_dict(), "skipped_files": [[p, why] for p, why in f.skipped],
                    "figure": path} for s, _, w, f in results]
        print(dumps(records[0] if len(records) == 1 else records))
        return 0
    for i, result in enumerate(results):
        if i:
            print()
        report(_rows(*result))
    print(path)
    return 0


def _rows(spec: str, size, weights: str, f) -> list[tuple[str, str]]:
    image_centre = tuple((n - 1) / 2 for n in f.heat.shape)
    note = ""
    if any(abs(a - b) > 1e-9 for a, b in zip(f.rf_center, image_centre)):
        note = f"  (not the image centre, {coords(image_centre)}: compare the ERF with this)"
    offset = ", ".join(f"{o:+.2f}" for o in f.offset)
    return [
        ("model", model_line(spec, size, weights)),
        ("layer", f"{unit_line(f.layer, f.unit, f.channel)}, mode {f.mode}"),
        ("inputs", f"{f.count} used: {f.source}" + (f"; {len(f.skipped)} skipped" if f.skipped else "")),
        ("RF box", f"{box_text(f.rf.box)}  (theoretical, clipped to the input)"),
        ("RF centre", f"{coords(f.rf_center)}{note}"),
        ("centre of mass", f"{', '.join(f'{c:.2f}' for c in f.center_of_mass)}  (offset {offset})"),
        ("sigma", f"{per_axis(f.sigma)} px  (moment Gaussian)"),
        ("mass radii", ", ".join(f"{int(p * 100)}%: {r:.1f} px" for p, r in f.mass_radii.items())),
        ("4 sigma / TRF", f"{per_axis(f.trf_ratio)}  (Gaussian extent over the theoretical RF's)"),
        ("area ratio", f"{_ratios(f.area_ratio)}  (RepLKNet: log scale, square at the image centre)"),
        ("linear area", f"{_ratios(f.linear_area_ratio)}  (linear mass, square at the RF centre)"),
        ("computed on", f.crop_note),
        *(("skipped", f"{path}: {why}") for path, why in f.skipped),
    ]


def _ratios(ratios: dict) -> str:
    return ", ".join(f"{int(t * 100)}%: " + ("not reached" if r is None else f"{r[1]:.3f} (side {r[0]})")
                     for t, r in ratios.items())
