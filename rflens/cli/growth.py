"""``rflens growth``: RF size and stride against depth, several models on one chart.

    rflens growth vgg16 resnet50 --layers conv,pool
"""

from __future__ import annotations

import rflens

from .common import checked_output, load, model_source_options, name_of, output_option, size_for, size_text


# shown under `rflens growth --help`
EXAMPLES = [
    'rflens growth vgg16 resnet50 densenet121',
    'rflens growth resnet18 --input-size 3x512x512 -o growth.png',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("growth", help="chart: RF size and stride against depth, several models")
    sp.add_argument("models", nargs="+", metavar="MODEL", help="one or more models, drawn on one chart ("
                    "each as in `rflens table MODEL`)")
    sp.add_argument("--input-size", help="C x spatial for every model (default: each model's usual size)")
    model_source_options(sp)
    sp.add_argument("--layers", default="conv,pool", help="which layers count as depth")
    output_option(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import growth_figure, save
    output = checked_output(args, "growth_" + "_".join(map(name_of, args.models)) + ".png")
    analyses = {}
    for spec in args.models:
        model = load(spec, args)[0]
        size = size_for(spec, args)
        analyses[f"{spec} ({size_text(size[1:])})"] = rflens.analyze(model, size)
    fig = growth_figure(analyses, args.layers)
    print(save(fig, output))
    return 0
