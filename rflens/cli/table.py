"""``rflens table``: one row per layer with its RF size, stride, start and flags.

    rflens table vgg16 --format markdown

A global layer (its units see the whole input: global pooling, a linear layer over positions,
attention) shows ``global (local N)`` as its RF, and the stride and start of that local field: what
a unit would see if the global op read one position (``Layer.local_rf_size``).

A layer downstream of an op rflens refuses (a detector's ``topk``) has empty field columns and the
flag ``refused: topk in rpn``; the table text ends with each refusal's full message.
"""

from __future__ import annotations

import csv
import io

import rflens

from .common import dumps, fmt, format_option, model_and_size, model_options, size_text

COLUMNS = ["name", "op", "output_shape", "rf_size", "stride", "start", "flags"]


# shown under `rflens table --help`
EXAMPLES = [
    'rflens table vgg16',
    'rflens table resnet50 --input-size 3x512x512 --format markdown',
    'rflens table timm:convnext_tiny --format json > convnext.json',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("table", help="one row per layer: RF size, stride, start, flags")
    model_options(sp)
    format_option(sp, ("table", "json", "csv", "markdown"))
    sp.set_defaults(run=run)


def run(args) -> int:
    model, size = model_and_size(args)
    records = rflens.analyze(model, size).table()
    if args.format == "json":
        print(dumps(records))
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        w.writerows(_row(r) for r in records)
        print(buf.getvalue(), end="")
    elif args.format == "markdown":
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for r in records:
            print("| " + " | ".join(c.replace("|", "\\|") for c in _row(r)) + " |")
    else:
        _print_rich(records, f"{args.model} at {size_text(size)}: theoretical receptive fields")
        refusals = {}
        for r in records:
            if r["refused"]:
                refusals[r["refused"]["message"]] = refusals.get(r["refused"]["message"], 0) + 1
        for message, n in refusals.items():
            print(f"{n} layer{'s' if n > 1 else ''} refused: {message}")
    return 0


def _print_rich(records: list[dict], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(c.replace("_", " "), no_wrap=c != "flags",
                         justify="right" if c in ("rf_size", "stride", "start") else "left")
    for r in records:
        table.add_row(*_row(r))
    console = Console()
    if not console.is_terminal:  # piped: wide enough that long layer names do not wrap
        console = Console(width=max(100, max(len(r["name"]) for r in records) + 105))
    console.print(table)


def _row(rec: dict) -> list[str]:
    if rec["refused"]:
        field = ["", "", ""]
    elif rec["global"]:
        field = [rf_cell(rec), _maybe(rec["local_stride"]), _maybe(rec["local_start"])]
    else:
        field = [fmt(rec["rf_size"]), fmt(rec["stride"]), fmt(rec["start"])]
    shape = "?" if rec["output_shape"] is None else size_text(rec["output_shape"])
    return [rec["name"], rec["op"], shape, *field, _flags(rec)]


def rf_cell(rec: dict) -> str:
    """A row's RF: its size, or ``global (local 435)`` where the units see the whole input."""
    if not rec["global"]:
        return fmt(rec["rf_size"])
    local = rec["local_rf_size"]
    return "global" + ("" if local is None or None in local else f" (local {fmt(local)})")


def _maybe(values) -> str:
    return "-" if values is None or None in values else fmt(values)


def _flags(rec: dict) -> str:
    refused = rec["refused"]
    if refused:
        return f"refused: {refused['op']} in " + (refused["module"] or "the model's forward")
    flags = []  # a global layer says so in its RF column
    if not rec["uniform"]:
        flags.append("non-uniform")
    if all(rec["covers_input"]):
        flags.append("covers input")
    # a global op's paths reach the whole input; a concatenation's paths are its channels (said below)
    if rec["min_rf"] != rec["max_rf"] and not rec["global"] and rec["rf_size_by_channel"] != [rec["min_rf"],
                                                                                             rec["max_rf"]]:
        flags.append(f"paths {fmt(rec['min_rf'])}..{fmt(rec['max_rf'])}")
    if rec["rf_size_by_channel"]:
        low, high = rec["rf_size_by_channel"]
        flags.append(f"rf {fmt(low)}..{fmt(high)} by channel")
    return ", ".join(flags)
