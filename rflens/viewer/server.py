"""The viewer's local web server: the standard library's ``ThreadingHTTPServer`` serving the
page, its two assets, the picture, and JSON (masks compact) and PNG (heat maps) answers.

Nothing is read from the file system after start-up: every path is looked up in a fixed
table, so no request can reach another file.  Every query parameter is checked; a bad one
gets ``400`` and a JSON ``{"error": ...}``, never a traceback.  Gradient RFs and ERFs run as
jobs in a background thread, one at a time, with progress and cancellation.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import itertools
import json
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import RFLensError
from .scene import Scene

MAX_INPUTS = 512  # ERF inputs one job may ask for
MAX_QUERY = 2048
ASSETS = {"/": (("index.html",), "text/html; charset=utf-8"),
          "/index.html": (("index.html",), "text/html; charset=utf-8"),
          "/static/viewer.js": (("view.js", "page.js"), "text/javascript; charset=utf-8"),
          "/static/viewer.css": (("viewer.css",), "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def asset(*names: str) -> bytes:
    """Files of ``assets/``, one after the other: the page's script is the view (``view.js``,
    which the notebook widget shares) and then the page's own part (``page.js``)."""
    return b"\n".join(resources.files(__package__).joinpath("assets", name).read_bytes() for name in names)


class BadRequest(RFLensError):
    """A request the server refuses with 400."""


class Cancelled(Exception):
    """Raised inside a job's progress callback to stop it."""


class Job:
    def __init__(self, ident: str, kind: str, layer: str, unit: tuple[int, ...], channel: int | None, inputs: int):
        self.id, self.kind, self.layer, self.unit, self.inputs = ident, kind, layer, unit, inputs
        self.channel = channel
        self.state = "queued"
        self.done, self.total = 0, (inputs if kind == "erf" else None)
        self.message = ""
        self.numbers: dict = {}
        self.heat: np.ndarray | None = None
        self.stop = threading.Event()

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "layer": self.layer, "unit": list(self.unit),
                "channel": self.channel, "inputs": self.inputs, "state": self.state, "done": self.done,
                "total": self.total, "message": self.message, "numbers": self.numbers}


class Jobs:
    """Gradient RF and ERF computations, one at a time: a new job cancels the running one."""

    KEEP = 8

    def __init__(self, scene: Scene, device=None):
        self.scene = scene
        self.device = device
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.running = threading.Lock()
        self.ids = itertools.count(1)
        self.threads: list[threading.Thread] = []

    def start(self, kind: str, layer: str, unit: tuple[int, ...], channel: int | None, inputs: int) -> Job:
        if not self.scene.has_weights:
            raise BadRequest("this model has no weights (built on the meta device): gradients need real values")
        with self.scene.lock:
            self.scene.layer(layer).unit(unit, channel=channel)  # a bad layer, unit or channel fails now, as a 400
        with self.lock:
            for j in self.jobs.values():
                j.stop.set()
            job = Job(str(next(self.ids)), kind, layer, unit, channel, inputs)
            self.jobs[job.id] = job
            for old in list(self.jobs)[:-self.KEEP]:
                del self.jobs[old]
            thread = threading.Thread(target=self._run, args=(job,), name=f"rflens-job-{job.id}")
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
            thread.start()
        return job

    def close(self, timeout: float = 60.0) -> None:
        """Cancel every job and wait for their threads (an ERF stops after its current batch)."""
        with self.lock:
            for j in self.jobs.values():
                j.stop.set()
            threads = list(self.threads)
        for t in threads:
            t.join(timeout)

    def get(self, ident: str) -> Job:
        job = self.jobs.get(ident)
        if job is None:
            raise BadRequest(f"no job {ident!r} (finished jobs are kept for a while, {self.KEEP} at most)")
        return job

    def _run(self, job: Job) -> None:
        with self.running:
            if job.stop.is_set():
                job.state = "cancelled"
                return
            job.state = "running"
            try:
                self._compute(job)
                job.state = "cancelled" if job.stop.is_set() else "done"
            except Cancelled:
                job.state = "cancelled"
            except RFLensError as e:
                job.state, job.message = "error", str(e)
            except Exception as e:  # noqa: BLE001 - reported to the page, not as a traceback
                job.state, job.message = "error", f"internal error: {type(e).__name__}: {e}"

    def _compute(self, job: Job) -> None:
        from ..methods.gradient import effective_field, gradient_field
        s = self.scene
        if job.kind == "gradient":
            x = None
            if s.picture is not None:
                from ..methods.images import to_tensor
                x = to_tensor(s.picture, s.input_size[0])
            g = gradient_field(s.model, job.layer, job.unit, input=x, channel=job.channel, input_size=s.input_size,
                               device=self.device)
            job.heat = g.heat
            job.numbers = {"input": "the picture" if x is not None else "zeros",
                           "support": int(g.rf.mask.sum()), "nonzero": int(g.nonzero.sum()),
                           "explanation": g.explain()}
            return

        def progress(done: int, total: int | None) -> None:
            job.done, job.total = done, total
            if job.stop.is_set():
                raise Cancelled
        e = effective_field(s.model, job.layer, job.unit, job.inputs, input_size=s.input_size, channel=job.channel,
                            batch_size=min(4, job.inputs), device=self.device, progress=progress)
        job.heat = e.heat
        job.numbers = {"inputs": e.count, "sigma": [round(v, 2) for v in e.sigma],
                       "center_of_mass": [round(v, 2) for v in e.center_of_mass],
                       "trf_ratio": [round(v, 3) for v in e.trf_ratio]}


def heat_png(heat: np.ndarray, log: bool) -> bytes:
    """An RGBA picture of a heat map: inferno colours, opacity rising with the value; log
    scale over four decades for single-input gradients, linear for ERFs."""
    from matplotlib import colormaps
    from PIL import Image
    top = float(heat.max()) if heat.size else 0.0
    v = np.zeros(heat.shape) if top <= 0 else heat / top
    if log:
        v = np.where(v > 0, np.clip(1 + np.log10(np.maximum(v, 1e-12)) / 4, 0.05, 1), 0)
    rgba = colormaps["inferno"](v)
    rgba[..., 3] = np.where(v > 0, 0.25 + 0.65 * v, 0)
    buf = io.BytesIO()
    Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


# -- parameters -------------------------------------------------------------------------------

def _query(raw: str, allowed: set[str], required: set[str]) -> dict[str, str]:
    if len(raw) > MAX_QUERY:
        raise BadRequest("query string too long")
    try:
        parsed = parse_qs(raw, keep_blank_values=True, strict_parsing=bool(raw), max_num_fields=16)
    except ValueError as e:
        raise BadRequest(f"malformed query string: {e}") from None
    unknown = set(parsed) - allowed
    if unknown:
        raise BadRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}; this endpoint takes "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    missing = required - set(parsed)
    if missing:
        raise BadRequest(f"missing parameter(s): {', '.join(sorted(missing))}")
    repeated = [k for k, v in parsed.items() if len(v) > 1]
    if repeated:
        raise BadRequest(f"parameter(s) given twice: {', '.join(repeated)}")
    return {k: v[0] for k, v in parsed.items()}


def _ints(text: str, name: str, count: int | None = None) -> tuple[int, ...]:
    parts = text.split(",") if text.strip() else []
    try:
        values = tuple(int(p, 10) for p in parts)
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not a comma-separated list of integers (e.g. 7,7)") from None
    if any(abs(v) > 10**9 for v in values):
        raise BadRequest(f"{name}={text!r}: number out of range")
    if count is not None and len(values) != count:
        raise BadRequest(f"{name}={text!r} must have {count} integers")
    return values


def _channel(q: dict[str, str]) -> int | None:
    """``channel=C``: one neuron's channel; absent: all the channels at the unit's position.
    Only the form is checked here: the engine checks the range against the layer."""
    if "channel" not in q:
        return None
    try:
        return int(q["channel"], 10)
    except ValueError:
        raise BadRequest(f"channel={q['channel']!r} is not a number (leave channel out for all the channels "
                         "at a position)") from None


# -- the server -------------------------------------------------------------------------------

class ViewerServer(ThreadingHTTPServer):
    """The viewer's HTTP server; ``url`` is where the page is, ``serve_forever()`` runs it."""

    # Request and job threads are joined when the server closes, never left running as daemons:
    # a thread that drops the last reference to the model's tensors while the interpreter shuts
    # down makes PyTorch abort the process ("terminate called without an active exception").
    daemon_threads = False
    block_on_close = True

    def __init__(self, scene: Scene, host: str = "127.0.0.1", port: int = 0, device=None):
        self.scene = scene
        self.jobs = Jobs(scene, device)
        self.assets = {path: (asset(*names), kind) for path, (names, kind) in ASSETS.items()}
        super().__init__((host, port), Handler)

    def server_close(self) -> None:
        """Stop listening, cancel the jobs and wait for every request and job thread."""
        super().server_close()
        self.jobs.close()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.server_address[0]).is_loopback
        except ValueError:
            return False

    @functools.cached_property
    def names(self) -> frozenset[str]:
        """The host names a request may be addressed to besides IP addresses: ``localhost``, and
        on another interface this machine's own names."""
        if self.loopback:
            return frozenset({"localhost"})
        return frozenset({"localhost", socket.gethostname().lower(), socket.getfqdn().lower()})

    def refusal(self, host: str) -> str:
        given = f"not to {host[:100]!r}" if host else "and this one has no Host header"
        if self.loopback:
            return f"this server answers only requests to localhost (localhost, 127.x.x.x or [::1], " \
                   f"with an optional port), {given}"
        return f"this server answers only requests to an IP address or to {', '.join(sorted(self.names))} " \
               f"(with an optional port), {given}: open it by its address"


def host_allowed(host: str, loopback: bool, names=frozenset({"localhost"})) -> bool:
    """Whether a request's ``Host`` header names this server, the guard against DNS rebinding (a
    page elsewhere reaching the server through an attacker's name that resolves here).

    The header must be a host and an optional numeric port, nothing else: an IP literal
    (``[...]`` for IPv6) or a name of ``names``, exactly.  On a loopback address only loopback
    literals (127.0.0.0/8, ::1) and ``localhost`` pass; on another interface any IP literal (a
    page addressed by IP has that IP as its origin, so no rebinding) and the machine's names.

    >>> [host_allowed(h, loopback=True) for h in ("127.0.0.1:8765", "[::1]", "localhost", "127.9.0.1")]
    [True, True, True, True]
    >>> [host_allowed(h, loopback=True) for h in ("127.0.0.1.evil.com", "127.0.0.1:80@evil.com", "10.0.0.2")]
    [False, False, False]
    >>> host_allowed("192.168.1.20:8765", loopback=False), host_allowed("evil.com", loopback=False)
    (True, False)
    """
    match = _HOST.fullmatch(host.strip())
    if match is None:
        return False
    name = (match["v6"] or match["name"]).lower()
    if match["port"] is not None and int(match["port"]) > 65535:
        return False
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return match["v6"] is None and name in names
    if match["v6"] is not None and ip.version != 6:
        return False
    if loopback:
        return ip == ipaddress.IPv6Address("::1") or ip in ipaddress.IPv4Network("127.0.0.0/8")
    return True


_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "rflens-view"
    sys_version = ""
    timeout = 10  # seconds a connection may stall; its thread then ends, so closing never hangs

    def log_message(self, format, *args) -> None:  # the library never prints
        pass

    # -- plumbing -------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (unknown method, bad request line), as JSON."""
        self.close_connection = True
        self._error(code, message or HTTPStatus(code).phrase)

    def _dispatch(self, routes: dict) -> None:
        try:
            host = self.headers.get("Host") or ""
            if not host_allowed(host, self.server.loopback, self.server.names):
                self._error(HTTPStatus.FORBIDDEN, self.server.refusal(host))
                return
            parts = urlsplit(self.path)
            route = routes.get(parts.path)
            if route is None:
                other = self._other_routes(routes)
                if parts.path in other:
                    self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} is not allowed on {parts.path}")
                else:
                    self._error(HTTPStatus.NOT_FOUND, f"nothing at {parts.path[:200]}")
                return
            route(parts.query)
        except BadRequest as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except RFLensError as e:  # an unknown layer, a unit outside the grid, ...
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001 - never a traceback to the client
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}. "
                        "This is a bug in rflens; please report it.")

    def _other_routes(self, routes: dict) -> set:
        return (set(self._get_routes()) | set(self._post_routes())) - set(routes)

    def do_GET(self) -> None:
        self._dispatch(self._get_routes())

    def do_HEAD(self) -> None:
        self._dispatch(self._get_routes())

    def do_POST(self) -> None:
        self._dispatch(self._post_routes())

    def _get_routes(self) -> dict:
        routes = {path: self._asset for path in self.server.assets}
        routes.update({"/image.png": self._image, "/api/meta": self._meta, "/api/unit": self._unit,
                       "/api/projective": self._projective, "/api/job": self._job, "/api/heat.png": self._heat})
        return routes

    def _post_routes(self) -> dict:
        return {"/api/job": self._start, "/api/job/cancel": self._cancel}

    # -- answers ------------------------------------------------------------------------------
    def _asset(self, query: str) -> None:
        _query(query, set(), set())
        body, kind = self.server.assets[urlsplit(self.path).path]
        self._send(200, body, kind)

    def _image(self, query: str) -> None:
        _query(query, set(), set())
        png = self.server.scene.image_png()
        if png is None:
            self._error(HTTPStatus.NOT_FOUND, "no image was given (rflens view --image PATH)")
        else:
            self._send(200, png, "image/png")

    def _meta(self, query: str) -> None:
        _query(query, set(), set())
        self._json(self.server.scene.meta())

    def _layer_unit(self, q: dict) -> tuple[str, tuple[int, ...], int | None]:
        """The layer, unit and channel (None: all) a query names; the engine checks the channel's
        range (UnitError: 400 naming the layer's channels)."""
        layer = self.server.scene.layer(q["layer"])  # LayerNotFoundError: 400 with close names
        return layer.name, layer.index(_ints(q["unit"], "unit")), _channel(q)

    def _unit(self, query: str) -> None:
        q = _query(query, {"layer", "unit", "channel"}, {"layer", "unit"})
        self._json(self.server.scene.unit(*self._layer_unit(q)))

    def _projective(self, query: str) -> None:
        q = _query(query, {"layer", "pixel", "channel"}, {"layer", "pixel"})
        self._json(self.server.scene.projective(q["layer"], _ints(q["pixel"], "pixel", 2), _channel(q)))

    def _start(self, query: str) -> None:
        q = _query(query, {"kind", "layer", "unit", "channel", "inputs"}, {"kind", "layer", "unit"})
        if q["kind"] not in ("gradient", "erf"):
            raise BadRequest(f"kind={q['kind']!r}: use gradient or erf")
        inputs = _ints(q.get("inputs", "16"), "inputs", 1)[0]
        if not 1 <= inputs <= MAX_INPUTS:
            raise BadRequest(f"inputs={inputs}: use 1 to {MAX_INPUTS}")
        self._json(self.server.jobs.start(q["kind"], *self._layer_unit(q), inputs).to_dict())

    def _job(self, query: str) -> None:
        q = _query(query, {"id"}, {"id"})
        self._json(self.server.jobs.get(q["id"]).to_dict())

    def _cancel(self, query: str) -> None:
        q = _query(query, {"id"}, {"id"})
        job = self.server.jobs.get(q["id"])
        job.stop.set()
        if job.state == "queued":
            job.state = "cancelled"
        self._json(job.to_dict())

    def _heat(self, query: str) -> None:
        q = _query(query, {"id"}, {"id"})
        job = self.server.jobs.get(q["id"])
        if job.state != "done" or job.heat is None:
            raise BadRequest(f"job {job.id} is {job.state}, it has no heat map")
        self._send(200, heat_png(job.heat, log=job.kind == "gradient"), "image/png")


def check_port(port, name: str = "port") -> int:
    """``port`` as a number the server can listen on (0: any free one), or an ``RFLensError``.

    >>> check_port(70000, "--port")
    Traceback (most recent call last):
    ...
    rflens.errors.RFLensError: --port 70000 is not a port number: use 0 to 65535 (0: any free one)
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise RFLensError(f"{name} {port!r} is not a port number: use 0 to 65535 (0: any free one)")
    return port


def serve(scene: Scene, host: str = "127.0.0.1", port: int = 0, device=None) -> ViewerServer:
    """A viewer server for ``scene``, bound (to the loopback address by default) but not yet
    serving: call ``serve_forever()`` (or run it in a thread) and open ``.url``.

    >>> import torchvision
    >>> server = serve(Scene(torchvision.models.vgg16(), (3, 224, 224)))
    >>> server.url.startswith("http://127.0.0.1:")
    True
    >>> server.server_close()
    """
    check_port(port)
    try:
        return ViewerServer(scene, host, port, device)
    except OSError as e:
        raise RFLensError(f"cannot listen on {host}:{port}: {e.strerror or e}"
                          + (" (choose another --port, or 0 for any free one)" if port else "")) from None
