"""``rflens scan``: every channel's top K images in a folder (the first step of Zhou et al. 2015
and of NetDissect), kept in a folder that the same command resumes.

    rflens scan resnet18 --layer layer3 --images photos/ --top-k 10 --out scan_layer3
    rflens scan resnet18 --layer layer3 --images /shared/photos --ray ray://head:10001
"""

from __future__ import annotations

import sys
from pathlib import Path

import rflens
from rflens import methods
from rflens.errors import RFLensError

from .common import (BATCH_HELP, LAYER_HELP, MODEL_HELP, check_weights_flags, coords, device_arg, dumps, executor_arg,
                     format_option, image_options, model_line, name_of, progress, ray_options, report, safe_name,
                     short, size_for, size_text, tracker, weighted_model, weights_options)

# what the folder's state is called in the report and in the JSON record
STATES = {"new": "new", "partial": "resumed", "finished": "finished earlier"}
STATE_NOTES = {"new": "", "resumed": "  (resumed)", "finished earlier": "  (finished earlier: delete it to scan again)"}


# shown under `rflens scan --help`
EXAMPLES = [
    'rflens scan resnet18 --layer layer3 --images photos/ --top-k 10 --out scan_layer3',
    'rflens scan resnet18=weights.pth --layer layer4 --images photos/ --limit 500',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("scan", help="top images: each channel's K most activating images in a folder "
                               "(resumable)")
    sp.add_argument("model", help=MODEL_HELP)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    sp.add_argument("--images", required=True, metavar="DIR",
                    help="a folder of images (recursive; unreadable files are skipped and listed)")
    sp.add_argument("--top-k", type=int, default=10, metavar="K", help="images kept per channel (10)")
    sp.add_argument("--out", metavar="DIR", help="folder for scan.npz (default: scan_MODEL_LAYER); progress is "
                    "kept there, so the same command resumes an interrupted scan")
    sp.add_argument("--limit", type=int, metavar="N", help="scan only the first N files")
    sp.add_argument("--batch-size", type=int, default=16, metavar="N", help=BATCH_HELP.format(16))
    format_option(sp)
    image_options(sp)
    weights_options(sp, channel=False, seed="seed of the random weights")
    ray_options(sp)
    sp.set_defaults(run=run)


def run(args) -> int:
    check_weights_flags(args, [args.model])
    methods.check_count("--top-k", args.top_k)
    methods.check_count("--batch-size", args.batch_size)
    methods.check_count("--limit", args.limit)
    normalize = methods.parse_normalize(args.normalize, "--normalize")
    methods.image_files(args.images)  # a missing or empty folder fails before any model is built
    device = device_arg(args.device)
    executor = executor_arg(args)
    out = Path(args.out or safe_name(f"scan_{name_of(args.model)}_{args.layer}"))
    folder = methods.ScanFolder(out)
    folder.check_settings(normalize, args.limit)
    state = STATES[folder.state]
    size = size_for(args.model, args)
    model, weights = weighted_model(args.model, args)
    target = methods.channel_layer(model, args.layer, size)
    record = {"model": args.model, "layer": target.name, "input_size": list(size), "normalize": normalize,
              "limit": args.limit, "weights": weights}
    created = not out.exists()
    folder.create(record)
    try:
        with progress() as bars:
            scan = rflens.top_images(model, args.layer, args.images, args.top_k, input_size=size,
                                     normalize=normalize, limit=args.limit, batch_size=args.batch_size,
                                     device=device, out=out, executor=executor,
                                     progress=tracker(bars, f"scanning {short(args.model)} {target.name}"))
    except RFLensError:
        if created:  # the folder this run made holds no scan: leave nothing behind
            (out / "settings.json").unlink(missing_ok=True)
            out.rmdir()
        raise
    except KeyboardInterrupt:
        if (out / "scan.partial.npz").exists():
            print(f"rflens: the images scanned so far are kept in {out / 'scan.partial.npz'}; run the same "
                  "command to resume", file=sys.stderr)
        raise
    path = str(out / "scan.npz")
    if args.format == "json":
        print(dumps({**record, "k": scan.k, "channels": scan.channels, "grid": list(scan.grid),
                     "seen": scan.seen, "skipped": len(scan.skipped),
                     "skipped_files": [list(x) for x in scan.skipped], "state": state, "scan": path}))
        return 0
    report([
        ("model", model_line(args.model, size, weights)),
        ("layer", f"{target.name}: {scan.channels} channels on a {size_text(scan.grid)} grid, top {scan.k} "
                  "images each"),
        ("images", f"{scan.seen} scanned in {args.images}" + (f"; {len(scan.skipped)} skipped" if scan.skipped
                                                                 else "") + f" ({_normalize_text(normalize)})"),
        *(("skipped", f"{name}: {why}") for name, why in scan.skipped),
        ("scan", path + STATE_NOTES[state]),
    ])
    return 0


def _normalize_text(normalize) -> str:
    if normalize is None:
        return "ImageNet mean and std"
    mean, std = normalize
    import numpy as np
    return f"mean {coords(np.atleast_1d(mean).tolist())}, std {coords(np.atleast_1d(std).tolist())}"
