"""``rflens view``: the interactive viewer in the browser (click a unit, see what it sees), or a
static page of it.

    rflens view resnet18 --image cat.jpg
    rflens view resnet18 --html resnet18.html
"""

from __future__ import annotations

import sys

from rflens.errors import RFLensError
from rflens.files import check_writable

from .common import (check_weights_flags, device_arg, load, model_options, size_for, weighted_model,
                     weights_options)


# shown under `rflens view --help`
EXAMPLES = [
    'rflens view resnet18 --image cat.jpg',
    'rflens view vgg16 --html vgg16.html',
]


def register(subparsers) -> None:
    sp = subparsers.add_parser("view", help="interactive viewer in the browser: click a unit, see what it sees")
    model_options(sp)
    sp.add_argument("--image", help="show this picture (resized and centre-cropped to the input size)")
    sp.add_argument("--port", type=int, help="port to listen on (default 8765; 0: any free port)")
    sp.add_argument("--host", help="address to listen on (default 127.0.0.1, this machine only)")
    sp.add_argument("--html", metavar="PATH.html", help="write a self-contained static page instead of serving")
    weights_options(sp, channel=False)
    sp.set_defaults(run=run)


def run(args) -> int:
    from rflens.viewer import Scene, check_port, export_html, serve
    if args.html and (args.port is not None or args.host is not None or args.weights):
        raise RFLensError("--html writes a static page (geometry only, no server): leave out --port, --host "
                          "and --weights")
    if args.html and not args.html.lower().endswith((".html", ".htm")):
        raise RFLensError(f"--html {args.html!r} must end in .html")
    if args.html:
        check_writable(args.html)  # refused before the work, not after it
    if args.port is not None:
        check_port(args.port, "--port")
    size = size_for(args.model, args)
    if args.html:  # built on the meta device: the geometry needs no weights
        scene = Scene(load(args.model, args)[0], size, args.image, args.model)
        print(export_html(scene, args.html))
        return 0
    check_weights_flags(args, [args.model])
    model, weights = weighted_model(args.model, args)
    server = serve(Scene(model, size, args.image, args.model, weights), args.host or "127.0.0.1",
                   8765 if args.port is None else args.port, device_arg(args.device))
    if not server.loopback:
        print(f"rflens: warning: serving on {args.host}, reachable from other machines (open it by its IP "
              "address or this machine's name)", file=sys.stderr)
    print(f"rflens view: {server.url}  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
