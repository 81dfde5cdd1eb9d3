"""``rflens grid``: one unit's RF in every selected layer, one panel each.

    rflens grid resnet50 --unit 3,3 --layers conv,pool
"""

from __future__ import annotations

from rflens.errors import RFLensError

from .common import (analysis, channel_option, check_output_first, model_options, name_of, output_option,
                     output_path, parse_unit)


# shown under `rflens grid --help`
EXAMPLES = [
    'rflens grid vgg16 --unit 7,7',
    'rflens grid resnet18 --unit 3,3 --layers "layer[1-4]$" -o grid.pdf',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("grid", help="picture: one unit's RF in every selected layer")
    model_options(sp)
    sp.add_argument("--unit", required=True, help="0-based unit index; clamped on smaller grids")
    channel_option(sp)
    sp.add_argument("--layers", default="conv,pool", help="op kinds (conv,pool), 'all', or a regex on names")
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import grid_figure, save, select_layers
    check_output_first(args)
    found = analysis(args)
    unit = parse_unit(args.unit)
    if unit is None:
        raise RFLensError("--unit must be indices such as 3,3 for a grid of layers")
    fig = grid_figure(found, unit, select_layers(found, args.layers), args.model, channel=args.channel)
    channel = "" if args.channel is None else f"_c{args.channel}"
    print(save(fig, output_path(args, f"grid_{name_of(args.model)}_{'-'.join(map(str, unit))}{channel}.png")))
    return 0
