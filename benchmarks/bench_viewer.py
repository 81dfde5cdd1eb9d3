"""(f) The viewer's answers: all per-layer data for one unit, server side, on ResNet-50 at 224x224.

    python benchmarks/bench_viewer.py

For each of ResNet-50's 201 layers, the answer the page asks for when a unit is chosen
(``/api/unit``: exact mask, boxes, centre, support, as JSON) is timed on the server side, for
a layer's first request (its geometry cached when the server starts) and again for another
unit; the same with the naive encoding, the mask as a JSON list of lists of booleans. Then
the same requests end to end over HTTP on loopback, the projective field of one pixel in
every layer, and the size of the static page.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from common import machine, table

from rflens.models import load_model
from rflens.viewer import Scene, export_html, serve

SIZE = (3, 224, 224)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def naive(scene: Scene, layer: str, unit) -> bytes:
    u = scene.analysis[layer].unit(unit)
    return json.dumps({"layer": layer, "unit": list(u.index), "box": [list(b) for b in u.box],
                       "unclipped_box": [list(b) for b in u.unclipped_box], "center": list(u.center),
                       "support_size": u.support_size, "mask": u.mask.tolist()}).encode()


def compact(scene: Scene, layer: str, unit) -> bytes:
    return json.dumps(scene.unit(layer, unit), separators=(",", ":")).encode()


def row(label: str, times: list[float], sizes: list[int]) -> list:
    ms = np.asarray(times) * 1e3
    return [label, f"{np.median(ms):.2f} ms", f"{np.percentile(ms, 95):.2f} ms", f"{ms.max():.2f} ms",
            f"{ms.sum():.0f} ms", f"{statistics.mean(sizes) / 1024:.1f} KiB"]


def main() -> None:
    t_start, scene = timed(lambda: Scene(load_model("resnet50"), SIZE, name="resnet50"))
    layers = scene.analysis.layers
    units = {n: tuple(g // 2 for g in scene.analysis[n].grid_shape) for n in layers}
    others = {n: tuple(max(0, g // 2 - 1) for g in scene.analysis[n].grid_shape) for n in layers}
    results = {}
    for label, fn, which in [("compact, first request", compact, units), ("compact, another unit", compact, others),
                             ("naive (JSON booleans), first", naive, units), ("naive, another unit", naive, others)]:
        times, sizes = [], []
        for n in layers:
            dt, body = timed(lambda fn=fn, n=n, u=which[n]: fn(scene, n, u))
            times.append(dt)
            sizes.append(len(body))
        results[label] = (times, sizes)

    server = serve(scene, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    http_times, http_sizes = [], []
    for n in layers:
        url = f"{server.url}api/unit?layer={n}&unit={','.join(map(str, others[n]))}"
        dt, body = timed(lambda url=url: urllib.request.urlopen(url).read())
        http_times.append(dt)
        http_sizes.append(len(body))
    server.shutdown()
    server.server_close()
    pf = [timed(lambda n=n: json.dumps(scene.projective(n, (100, 120)), separators=(",", ":")).encode()) for n in layers]
    with TemporaryDirectory() as tmp:
        t_html, path = timed(lambda: export_html(scene, Path(tmp) / "resnet50.html"))
        html_size = path.stat().st_size

    c, v = results["compact, another unit"], results["naive, another unit"]
    print(f"machine: {machine()}\n")
    print(f"ResNet-50 at 224x224: {len(layers)} layers, one request per layer (the centre unit, then its "
          f"neighbour up-left); server start (analyze and the layer table) {t_start:.2f} s.\n")
    print(table(["answer", "median per layer", "95th percentile", "slowest layer", "all layers", "mean size"],
                [row(label, *results[label]) for label in results]
                + [row("compact, over HTTP on loopback", http_times, http_sizes),
                   row("projective field of one pixel (100, 120)", [t for t, _ in pf], [len(b) for _, b in pf])]))
    print(f"\nnaive / compact, another unit, summed over the layers: time {sum(v[0]) / sum(c[0]):.1f}x, "
          f"bytes {sum(v[1]) / sum(c[1]):.0f}x. Static page (`rflens view resnet50 --html`): "
          f"{html_size / 1024:.0f} KiB, written in {t_html:.2f} s.")


if __name__ == "__main__":
    main()
