"""``rflens unit``: the exact receptive field of one unit, as text or JSON.

    rflens unit vgg16 --layer features.29 --unit 7,7
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import rflens
from rflens.errors import RFLensError
from rflens.files import atomic_write, check_writable

from .common import (LAYER_HELP, UNIT_HELP, box_text, channel_option, dumps, fmt, format_option, load, model_and_size,
                     model_line, model_options, no_local, parse_unit, report, size_text)

if TYPE_CHECKING:
    import numpy as np


# shown under `rflens unit --help`
EXAMPLES = [
    'rflens unit vgg16 --layer features.29 --unit 7,7',
    'rflens unit mobilenet_v3_small --layer features.9 --local --format json',
    'rflens unit alexnet --layer features.5 --unit 0,3 --method probe',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("unit", help="the exact receptive field of one unit")
    model_options(sp)
    sp.add_argument("--layer", required=True, help=LAYER_HELP)
    sp.add_argument("--unit", default="center", help=UNIT_HELP)
    channel_option(sp)
    format_option(sp)
    sp.add_argument("--mask-out", metavar="PATH.npy", help="write the support mask as a .npy bool array")
    sp.add_argument("--method", choices=["analytic", "probe"], default="analytic",
                    help="analytic: the exact engine (default); probe: the brute-force gradient oracle (slow)")
    sp.add_argument("--local", action="store_true", help="ignore global-context paths (SE gates, ...)")
    sp.set_defaults(run=run)


def run(args) -> int:
    if args.mask_out and not args.mask_out.endswith(".npy"):
        raise RFLensError(f"--mask-out {args.mask_out!r} must end in .npy")
    if args.mask_out:
        check_writable(args.mask_out)  # refused before the work, not after it
    index = parse_unit(args.unit)
    if args.method == "probe":
        model, size = model_and_size(args, device="cpu")
        # the analytic layer resolves the unit (centre, bounds) for the probe's dense answer
        layer = rflens.analyze(load(args.model, args)[0], size)[args.layer]
        position = layer.index(index)  # a unit or channel outside the layer fails before the slow probe
        layer = layer.for_channel(args.channel)
        probe = rflens.analyze(model, size, method="probe")
        unit = probe.layer(args.layer, layer.spatial_dims).unit(position, channel=args.channel)
        rf_size, stride = None, None
    else:
        model, size = model_and_size(args)
        layer = rflens.analyze(model, size)[args.layer]
        if args.local:
            layer = layer.local or no_local(layer)
        layer = layer.for_channel(args.channel)
        unit = layer.unit(index)
        rf_size, stride = layer.rf_size, layer.stride
    record = unit.to_dict(size, layer.is_global)
    record["method"] = args.method
    if rf_size is not None:
        record["rf_size"] = list(rf_size)
        record["stride"] = list(stride)
        record["local_rf_size"] = None if layer.local_rf_size is None else list(layer.local_rf_size)
    if args.mask_out:
        _save_npy(args.mask_out, unit.mask)
    if args.format == "json":
        print(dumps(record))
        return 0
    rows = [
        ("model", model_line(args.model, size)),
        ("layer", f"{unit.layer}  (grid {size_text(layer.grid_shape) or 'scalar'})"),
        ("unit", ", ".join(map(str, unit.index)) + ("" if args.channel is None else f", channel {args.channel}")),
        *_box_rows(unit, layer.analysis.spatial),
        ("center", ", ".join(map(str, unit.center))),
        ("support", f"{unit.support_size} pixels"),
    ]
    local = layer.local_rf_size if rf_size is not None else None
    if local is not None and None not in local:  # every unit sees the whole input: its size says little
        rows.append(("layer RF", f"global (local {fmt(local)}, stride {fmt(layer.local_stride)})"))
    elif rf_size is not None:
        rows.append(("layer RF", f"{fmt(rf_size)}, stride {fmt(stride)}"))
    if layer.is_global:
        more = len(layer.global_via) - 1
        rows.append(("global", f"yes, via {layer.global_via[0]}" + (f" (+{more} more)" if more else "")))
    report(rows)
    return 0


def _box_rows(unit, spatial) -> list[tuple[str, str]]:
    """The box, labelled by what it is: the unclipped box where the field lies inside the input,
    else the part inside and the unclipped box beside it."""
    unclipped = [tuple(b) for b in unit.unclipped_box]
    if [tuple(b) for b in unit.box] == unclipped:
        return [("box", f"{box_text(unit.box)}  (inside the input)")]
    outside = any(lo < 0 or hi > n for (lo, hi), n in zip(unclipped, spatial))
    return [("box", f"{box_text(unit.box)}  ({'clipped to the input' if outside else 'the pixels it reads'})"),
            ("unclipped", box_text(unit.unclipped_box))]


def _save_npy(path: str, array: np.ndarray) -> None:
    import numpy as np
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a name
            np.save(f, array)
    atomic_write(path, write)
