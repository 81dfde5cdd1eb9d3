"""The ``rflens`` command line: only calls the library and prints.

    rflens table vgg16
    rflens unit vgg16 --layer features.29 --unit 7,7

One module per command, each with ``register(subparsers)`` (its options) and ``run(args)``
(its exit code); what they share is in ``common``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import rflens
from rflens.errors import RFLensError

from . import empirical, erf, grad, grid, growth, overlay, scan, segment, show, table, unit, view

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# in the order `rflens --help` lists them
COMMANDS = [table, unit, show, grid, growth, overlay, erf, grad, scan, empirical, segment, view]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rflens", description="Exact receptive fields of PyTorch models.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="examples:\n  rflens table vgg16\n  rflens unit vgg16 --layer features.29 "
                                "--unit 7,7\n  rflens view resnet18 --image cat.jpg\n\n`rflens COMMAND --help` "
                                "describes each command's options.")
    p.add_argument("--version", action="version", version=f"rflens {rflens.__version__}",
                   help="print rflens's version and exit")
    subparsers = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    for command in COMMANDS:
        sp = subparsers.choices[command.__name__.rpartition(".")[2]]
        sp.formatter_class = argparse.RawDescriptionHelpFormatter  # the examples keep their lines
        sp.epilog = "examples:\n" + "\n".join(f"  {e}" for e in command.EXAMPLES)
    return p


# options whose value may start with '-' (a negative index, refused with the grid's range by the
# library): argparse would take `--unit -1,3` for two options and say "expected one argument"
UNIT_OPTIONS = ("--unit", "--units")
NEGATIVE_VALUE = re.compile(r"-\d[\d,:\s()-]*")


def with_negative_values(argv: list[str]) -> list[str]:
    """``--unit -1,3`` as ``--unit=-1,3``, which argparse reads as the option's value.

    >>> with_negative_values(["unit", "vgg16", "--unit", "-1,3", "--units", "-2:0"])
    ['unit', 'vgg16', '--unit=-1,3', '--units=-2:0']
    """
    out: list[str] = []
    for a in argv:
        if out and out[-1] in UNIT_OPTIONS and NEGATIVE_VALUE.fullmatch(a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(with_negative_values(sys.argv[1:] if argv is None else list(argv)))
    try:
        return args.run(args)
    except RFLensError as e:
        print(f"rflens: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("rflens: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:  # what rflens does not check beforehand (TooLargeError is an RFLensError)
        print("rflens: error: out of memory: use a smaller --input-size (or fewer inputs, a smaller --batch-size)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into head & co.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # noqa: BLE001 - the last line of defence against tracebacks
        print(f"rflens: internal error: {type(e).__name__}: {e}\n"
              "This is a bug in rflens; please report it with the command you ran.", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
