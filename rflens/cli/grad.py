"""``rflens grad``: the gradient RF of one unit for one input, and why pixels of the theoretical
RF get no gradient.

    rflens grad resnet18 --layer layer2 --unit 4,4 --image cat.jpg
"""

from __future__ import annotations

import rflens

from .common import (LAYER_HELP, box_text, check_weights_flags, checked_output, device_arg, dumps, format_option,
                     model_line, model_options, name_of, output_option, parse_unit, report, size_for,
                     unit_line, weighted_model, weights_options)


# shown under `rflens grad --help`
EXAMPLES = [
    'rflens grad resnet18 --layer layer2 --unit 4,4 --image cat.jpg',
    'rflens grad vgg16 --layer features.29 --unit center --format json',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("grad", help="gradient RF of one unit for one input, missing pixels explained")
    model_options(sp)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    sp.add_argument("--unit", required=True, help="0-based unit index, e.g. 7,7, or center")
    sp.add_argument("--image", help="the input: this picture (resized, centre-cropped, ImageNet-normalised); "
                    "default: zeros")
    format_option(sp)
    weights_options(sp)
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import gradient_figure, save

    check_weights_flags(args, [args.model])
    unit = parse_unit(args.unit)
    unit_name = "center" if unit is None else "-".join(map(str, unit))
    output = checked_output(args, f"grad_{name_of(args.model)}_{args.layer}_{unit_name}.png")
    device = device_arg(args.device)
    size = size_for(args.model, args)
    model, weights = weighted_model(args.model, args)
    gf = rflens.gradient_field(model, args.layer, unit, input=args.image, channel=args.channel, input_size=size,
                               device=device)
    path = str(save(gradient_figure(gf), output)) if output else None
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, **gf.to_dict(), "figure": path}))
        return 0
    support = int(gf.rf.mask.sum())
    nonzero = int(gf.nonzero.sum())
    why = gf.explain()[:-1] or ["the gradient reaches every pixel of the theoretical RF"]  # the last: where
    report([
        ("model", model_line(args.model, size, weights)),
        ("layer", unit_line(gf.layer, gf.unit, gf.channel)),
        ("input", gf.input_kind),
        ("RF box", f"{box_text(gf.rf.box)}  (theoretical, clipped to the input)"),
        ("support", f"{support} pixels in the theoretical RF"),
        ("nonzero", f"{nonzero} pixels with a nonzero gradient ({100 * nonzero / max(1, support):.1f}% of the "
                    "support)"),
        ("outside", f"{int(gf.outside.sum())} pixels with a gradient outside the theoretical RF"),
        ("missed", ", ".join(f"{int(m.sum())} {cause}" for cause, m in gf.missed.items())),
        ("why", why[0]),
        *(("", w) for w in why[1:]),
        ("computed on", gf.crop_note),
    ])
    print(path)
    return 0
