"""``rflens empirical``: empirical receptive fields by occlusion on each channel's top images
(Zhou et al. 2015), against the theoretical size.

    rflens empirical resnet18 --layer layer3 --scan scan_layer3 --units 0-15
"""

from __future__ import annotations

import rflens
from rflens import methods
from rflens.errors import RFLensError

from .common import (LAYER_HELP, MODEL_HELP, check_weights_flags, checked_output, device_arg, dumps, executor_arg,
                     fmt, model_line, name_of, progress, ray_options, report, short, tracker, weighted_model)
from .scan_inputs import ScanInputs, measuring_options, occluder, parse_channels


# shown under `rflens empirical --help`
EXAMPLES = [
    'rflens empirical resnet18 --layer layer3 --scan scan_layer3 --units 0-3 --top-k 5',
    'rflens empirical alexnet --layer features.5 --images photos/ --units 0,7 --format json',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("empirical", help="empirical RF by occlusion on top images (Zhou et al. 2015): "
                               "theoretical vs empirical size")
    sp.add_argument("model", help=MODEL_HELP)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    where = sp.add_mutually_exclusive_group(required=True)
    where.add_argument("--images", metavar="DIR", help="a folder of images, scanned first (kept in memory)")
    where.add_argument("--scan", metavar="DIR", help="a folder made by `rflens scan`")
    sp.add_argument("--units", metavar="LIST", help="channels: 0-15, 0,3,7 or a mix (default: the first 16)")
    sp.add_argument("--top-k", type=int, metavar="K", help="top images per unit (default: 10, or all the scan kept)")
    sp.add_argument("--discrepancy", choices=["abs", "drop"], default="abs",
                    help="abs: |activation change| (default); drop: signed activation minus occluded activation")
    sp.add_argument("--batch-size", type=int, default=64, help="occluded images per forward")
    sp.add_argument("--checkpoint", metavar="PATH.npz", help="save each image's results as they come; rerun the "
                    "same command to resume after an interruption")
    measuring_options(sp)
    ray_options(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import empirical_figure, empirical_grid_figure, save

    check_weights_flags(args, [args.model])
    methods.check_count("--top-k", args.top_k)
    methods.check_count("--batch-size", args.batch_size)
    if args.images:
        methods.image_files(args.images)
    output = checked_output(args, f"empirical_{name_of(args.model)}_{args.layer}.png")
    if args.checkpoint and not args.checkpoint.endswith(".npz"):
        raise RFLensError(f"--checkpoint {args.checkpoint!r} must end in .npz")
    device = device_arg(args.device)
    executor = executor_arg(args)
    model, weights = weighted_model(args.model, args)
    inputs = ScanInputs(args, model, weights)
    target = methods.channel_layer(model, args.layer, inputs.size)
    channels = parse_channels(args.units, target, "--units")
    occ = occluder(args, inputs.size)
    k = inputs.k(args.top_k)
    with progress() as bars:
        scan = inputs.scan_for(args, model, k, device, bars, executor)
        result = rflens.empirical_field(
            model, args.layer, channels, inputs.files() if inputs.scan is not None else args.images, scan=scan,
            k=k, occluder=occ, discrepancy=args.discrepancy, input_size=inputs.size, normalize=inputs.normalize,
            batch_size=args.batch_size, device=device, checkpoint=args.checkpoint, executor=executor,
            progress=tracker(bars, f"occluding the top images of {len(channels)} channels"))
    if len(channels) == 1:
        fig = empirical_figure(result.fields[channels[0]], occ, args.discrepancy)
    else:
        fig = empirical_grid_figure(result, channels[:16], title=short(args.model))
    path = str(save(fig, output)) if output else None
    row = result.to_dict()
    sizes = {c: f.size for c, f in result.fields.items()}
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, "input_size": list(inputs.size),
                     "scan": args.scan, **row, "unit_sizes": {str(c): s for c, s in sizes.items()}, "figure": path}))
        return 0
    dead = [c for c, s in sizes.items() if s == 0]
    mean = ("n/a (no occluder changed any unit)" if row["empirical_mean"] is None
            else f"{row['empirical_mean']:.2f} ± {row['empirical_std']:.2f} px")
    source = f"the scan in {args.scan}" if args.scan else f"a scan of {args.images}"
    rows = [
        ("model", model_line(args.model, inputs.size, weights)),
        ("top images", f"{k} per unit from {source} ({scan.seen} images)"),
        ("occluder", f"{occ.size}x{occ.size}, stride {occ.stride}, {occ.fill} fill (seed {occ.seed}); "
                     f"discrepancy {args.discrepancy}"),
        ("layer", result.layer),
        ("theoretical", f"{fmt(result.theoretical)} px"),
        ("empirical", f"{mean} over {len(result.sizes)} units  (smallest centred square holding "
                      f"{row['mass']:.0%} of the averaged map)"),
        ("unit sizes", ", ".join(f"{c}: {s}" for c, s in sizes.items())),
    ]
    if dead:
        rows.append(("left out", f"{', '.join(map(str, dead))}: no occluder changed these units"))
    rows.append(("computed", f"on crops of the images, not incrementally: {result.fallback}" if result.fallback
                 else "by incremental re-inference of each occluder's projective field"))
    report(rows)
    print(path)
    return 0
