"""``rflens segment``: segmentations of one channel's top images, by NetDissect's threshold on
the activation map and/or by occlusion.

    rflens segment resnet18 --layer layer3 --channel 14 --scan scan_layer3 --method both
"""

from __future__ import annotations

import argparse
import os
import sys

import rflens
from rflens import methods

from .common import (LAYER_HELP, MODEL_HELP, check_weights_flags, checked_output, device_arg, dumps, model_line, name_of,
                     progress, report, short, tracker, weighted_model)
from .scan_inputs import ScanInputs, measuring_options, occluder, parse_channels


class _DeprecatedUnit(argparse.Action):
    """``--unit C``, the channel's old flag ("unit" elsewhere is a position): kept for one release."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("rflens: warning: --unit is deprecated for segment; use --channel", file=sys.stderr)
        setattr(namespace, self.dest, values)


# shown under `rflens segment --help`
EXAMPLES = [
    'rflens segment resnet18 --layer layer3 --channel 14 --scan scan_layer3 --method both',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("segment", help="segmentations of one channel's top images (NetDissect and/or "
                               "occlusion)")
    sp.add_argument("model", help=MODEL_HELP)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    channel = sp.add_mutually_exclusive_group(required=True)
    channel.add_argument("--channel", type=int, metavar="C", help="the channel (a number, not a position)")
    channel.add_argument("--unit", type=int, dest="channel", metavar="C", action=_DeprecatedUnit,
                         help=argparse.SUPPRESS)
    sp.add_argument("--scan", required=True, metavar="DIR", help="a folder made by `rflens scan` (NetDissect's "
                    "threshold is the top 0.5%% of the channel's activations over the whole scan)")
    sp.add_argument("--method", choices=["netdissect", "occlusion", "both"], default="netdissect",
                    help="netdissect: activation above the scan's top 0.5%% (default); occlusion: where occluding "
                    "changes the activation; both: one sheet each")
    sp.add_argument("--top-k", type=int, metavar="K", help="top images (default: all the scan kept)")
    measuring_options(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.plot import save, segment_sheet

    check_weights_flags(args, [args.model])
    methods.check_count("--top-k", args.top_k)
    kinds = ["netdissect", "occlusion"] if args.method == "both" else [args.method]
    output = checked_output(args, f"segment_{name_of(args.model)}_{args.layer}_{args.channel}.png")
    device = device_arg(args.device)
    model, weights = weighted_model(args.model, args)
    inputs = ScanInputs(args, model, weights)
    target = methods.channel_layer(model, args.layer, inputs.size)
    parse_channels(str(args.channel), target, "--channel")
    occ = occluder(args, inputs.size) if "occlusion" in kinds else None
    k = inputs.k(args.top_k)
    segments = []
    with progress() as bars:
        for method in kinds:
            # the scanned files, not the scan, as images: segment() hands a lone scan on to
            # empirical_field as images, which refuses it (see the report on rflens/segment.py)
            segments += rflens.segment(model, args.layer, args.channel, inputs.files(), scan=inputs.scan, k=k,
                                       method=method, occluder=occ, input_size=inputs.size,
                                       normalize=inputs.normalize, device=device,
                                       progress=tracker(bars, f"{method} segmentation of channel {args.channel}"))
    title = f"{short(args.model)} · {target.name} · channel {args.channel}: top {k} of {inputs.scan.seen} images"
    path = str(save(segment_sheet(segments, title), output)) if output else None
    records = [{"method": s.method, "rank": rank, "image": s.image.name, "score": round(s.image.score, 5),
                "where": list(s.image.where), "level": round(s.level, 5), "mask_pixels": int(s.mask.sum()),
                "mask_fraction": round(float(s.mask.mean()), 4)}
               for method in kinds for rank, s in enumerate(x for x in segments if x.method == method)]
    if args.format == "json":
        print(dumps({"model": args.model, "weights": weights, "layer": target.name, "channel": args.channel,
                     "scan": args.scan, "segments": records, "figure": path}))
        return 0
    rows = [("model", model_line(args.model, inputs.size, weights)),
            ("unit", f"{target.name}, channel {args.channel}: top {k} images of the scan in {args.scan}")]
    for method in kinds:
        mine = [r for r in records if r["method"] == method]
        how = (f"activation >= {mine[0]['level']:.4g} (the scan's top 0.5%)" if method == "netdissect"
               else "|activation change| >= half of each map's maximum")
        rows.append((method, how))
        rows += [f"  {r['rank'] + 1:>2}. {os.path.basename(r['image'])}  score {r['score']:.4g}, "
                 f"{r['mask_pixels']} px in the mask ({r['mask_fraction']:.1%})" for r in mine]
    report(rows)
    print(path)
    return 0
