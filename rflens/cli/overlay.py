"""``rflens overlay``: the RF boxes of a few units per layer, drawn on a photograph.

    rflens overlay resnet50 --image cat.jpg --layers layer2,layer3 --units center,corners
"""

from __future__ import annotations

from rflens.errors import RFLensError

from .common import (analysis, check_output_first, model_options, name_of, output_option, output_path,
                     picture_for)


# shown under `rflens overlay --help`
EXAMPLES = [
    'rflens overlay resnet50 --image cat.jpg --layers layer2,layer3 --units center,corners',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("overlay", help="picture: RF boxes of a few units per layer on a photograph")
    model_options(sp)
    sp.add_argument("--image", required=True, help="the photograph to draw on (resized and centre-cropped to the "
                    "input size)")
    sp.add_argument("--layers", required=True, help="comma-separated layer names")
    sp.add_argument("--units", default="center,corners", help="center, corners and/or i:j (0-based, "
                    "inside every layer's grid), comma-separated")
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import overlay_figure, save
    check_output_first(args)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()]
    if not layers:
        raise RFLensError(f"--layers {args.layers!r} names no layer: give layer names as `rflens table` lists them, "
                          "comma-separated (e.g. features.5,features.12)")
    found = analysis(args)
    picture = picture_for(args, found)
    for name in layers:
        found[name]  # unknown names fail here, with close matches
    fig = overlay_figure(found, picture, layers, args.units, args.model)
    print(save(fig, output_path(args, f"overlay_{name_of(args.model)}.png")))
    return 0
