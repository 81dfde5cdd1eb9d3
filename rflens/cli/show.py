"""``rflens show``: a picture of one unit's exact RF, on the input or on an image.

    rflens show vgg16 --layer features.29 --unit 7,7 --image cat.jpg
"""

from __future__ import annotations

from .common import (LAYER_HELP, UNIT_HELP, analysis, channel_option, check_output_first, model_options, name_of, no_local,
                     output_option, output_path, parse_unit, picture_for)


# shown under `rflens show --help`
EXAMPLES = [
    'rflens show vgg16 --layer features.29 --unit 7,7 --image cat.jpg',
    'rflens show resnet18 --layer layer2 --unit 0,0 -o corner.svg',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("show", help="picture: one unit's exact RF on the input or an image")
    model_options(sp)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    sp.add_argument("--unit", default="center", help=UNIT_HELP)
    channel_option(sp)
    sp.add_argument("--image", help="draw on this picture (resized and centre-cropped to the input size)")
    sp.add_argument("--local", action="store_true", help="ignore global-context paths")
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import save, unit_figure
    check_output_first(args)
    found = analysis(args)
    layer = found[args.layer]
    if args.local:
        layer = layer.local or no_local(layer)
    layer = layer.for_channel(args.channel)
    unit = layer.unit(parse_unit(args.unit))
    fig = unit_figure(layer, unit, picture_for(args, found), args.model)
    channel = "" if args.channel is None else f"_c{args.channel}"
    print(save(fig, output_path(args, f"rf_{name_of(args.model)}_{args.layer}_{'-'.join(map(str, unit.index))}{channel}.png")))
    return 0
