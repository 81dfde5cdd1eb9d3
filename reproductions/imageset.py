"""Assemble an offline folder of natural photographs for scans and empirical RFs (`make data`).

Nothing here downloads from the web: the photographs come from packages of the registries the
project already uses.

* scikit-image's bundled photographs and scikit-learn's two sample images (Python packages);
* Debian packages, fetched with ``apt-get download`` (no installation, no root):
  ``opencv-doc`` (OpenCV's sample photographs), ``mate-backgrounds`` (nature photographs),
  ``plasma-workspace-wallpapers`` (the photographic wallpapers, largest size of each) and
  ``tuxpaint-stamps-default`` (photographic cut-outs of animals, food, plants, vehicles and
  household objects, laid on ImageNet's mean colour; drawings, symbols and letters are left out).

Every image is stored as RGB JPEG with its shorter side 256 px (what a 224 px centre crop
needs), named ``<source>-<name>.jpg``.  The run is deterministic (sorted sources, no
randomness), resumable (files already there are kept) and never leaves a half-written file
(each file is written to a temporary name and renamed).  ``SOURCES.md`` and ``sources.json``
in the folder give each file's origin and licence; the Debian packages' copyright files are
copied into ``licenses/``.

    python reproductions/imageset.py data/images            # everything (~430 images, ~1 min)
    python reproductions/imageset.py tests/x --only skimage  # the Python packages' photographs only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 256
IMAGENET_MEAN_RGB = (124, 116, 104)

SKIMAGE = ("astronaut", "brick", "camera", "cat", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
           "immunohistochemistry", "moon", "motorcycle", "retina", "rocket")
OPENCV = ("aero1", "aero3", "aloeL", "apple", "baboon", "basketball1", "box_in_scene", "building", "butterfly",
          "fruits", "graf1", "HappyFish", "home", "leuvenA", "leuvenB", "licenseplate_motion", "messi5",
          "orange", "rubberwhale1", "smarties", "squirrel_cls", "starry_night", "stuff")
PLASMA = ("Altai", "Autumn", "BytheWater", "Canopee", "Cascade", "ColdRipple", "ColorfulCups", "DarkestHour",
          "EveningGlow", "FallenLeaf", "MilkyWay", "Path")
TUXPAINT = ("animals", "clothes", "food", "hobbies", "household", "medical", "military", "naturalforces", "people",
            "plants", "space", "sports", "town", "vehicles")
TUXPAINT_SKIP = ("cartoon", "roadsigns", "flags", "symbols")
DEBIAN = ("opencv-doc", "mate-backgrounds", "plasma-workspace-wallpapers", "tuxpaint-stamps-default")


def _skimage() -> Iterator[tuple[str, Image.Image, dict]]:
    import skimage
    import skimage.data as data
    for name in SKIMAGE:
        img = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
        yield name, Image.fromarray(np.asarray(img)), {
            "package": f"scikit-image {skimage.__version__}", "origin": f"skimage.data.{name}",
            "licence": "see skimage/data/README.txt (public domain or CC0 / CC-BY, per image)"}


def _sklearn() -> Iterator[tuple[str, Image.Image, dict]]:
    import sklearn
    from sklearn.datasets import load_sample_image
    for name in ("china.jpg", "flower.jpg"):
        yield Path(name).stem, Image.fromarray(load_sample_image(name)), {
            "package": f"scikit-learn {sklearn.__version__}", "origin": f"sklearn.datasets.load_sample_image({name!r})",
            "licence": "CC-BY 2.0 (Flickr photographs; see sklearn/datasets/images/README.txt)"}


def _debian_tree(package: str, cache: Path) -> tuple[Path, str]:
    """The package's files (fetched with apt-get download, unpacked with dpkg-deb) and version."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        run = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if run.returncode or not found:
            raise RuntimeError(f"apt-get download {package} failed: {run.stderr.strip()[-300:]}")
    deb = found[-1]
    version = deb.name.split("_")[1].replace("%3a", ":")
    tree = cache / "tree" / package
    if not (tree / ".done").exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        (tree / ".done").touch()
    return tree, version


def _debian(package: str, cache: Path, out: Path) -> Iterator[tuple[str, Image.Image, dict]]:
    tree, version = _debian_tree(package, cache)
    copyright = tree / "usr/share/doc" / package / "copyright"
    if copyright.exists():
        (out / "licenses").mkdir(exist_ok=True)
        shutil.copyfile(copyright, out / "licenses" / f"{package}.copyright")
    licence = f"see licenses/{package}.copyright"
    for name, path in _debian_files(package, tree):
        with Image.open(path) as im:
            im.load()
            img = _flatten(im)
        yield name, img, {"package": f"Debian {package} {version}", "origin": "/" + str(path.relative_to(tree)),
                          "licence": licence}


def _debian_files(package: str, tree: Path) -> list[tuple[str, Path]]:
    share = tree / "usr/share"
    if package == "opencv-doc":
        folder = share / "doc/opencv-doc/examples/data"
        return [(n, p) for n in OPENCV for p in sorted(folder.glob(f"{n}.*"))[:1]]
    if package == "mate-backgrounds":
        return [(p.stem, p) for p in sorted((share / "backgrounds/mate/nature").glob("*.jpg"))]
    if package == "plasma-workspace-wallpapers":
        out = []
        for n in PLASMA:
            sizes = sorted((share / "wallpapers" / n / "contents/images").glob("*.*"),
                           key=lambda p: _pixels(p.stem))
            out += [(n, sizes[-1])] if sizes else []
        return out
    files = []
    for p in sorted((share / "tuxpaint/stamps").rglob("*.png")):
        parts = p.relative_to(share / "tuxpaint/stamps").parts
        if parts[0] in TUXPAINT and not any(s in part for part in parts for s in TUXPAINT_SKIP):
            files.append(("_".join(parts[:-1] + (p.stem,)), p))
    return files


def _pixels(stem: str) -> int:
    w, _, h = stem.partition("x")
    return int(w) * int(h) if w.isdigit() and h.isdigit() else 0


def _flatten(im: Image.Image) -> Image.Image:
    """RGB; a cut-out with transparency is laid on ImageNet's mean colour."""
    if im.mode in ("RGBA", "LA", "P") and (im.mode != "P" or "transparency" in im.info):
        rgba = im.convert("RGBA")
        ground = Image.new("RGBA", rgba.size, IMAGENET_MEAN_RGB + (255,))
        return Image.alpha_composite(ground, rgba).convert("RGB")
    return im.convert("RGB")


def _resized(img: Image.Image) -> Image.Image:
    img = img.convert("RGB")
    scale = SIDE / min(img.size)
    return img.resize((max(SIDE, round(img.width * scale)), max(SIDE, round(img.height * scale))), Image.LANCZOS)


def _save(img: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    _resized(img).save(buf, "JPEG", quality=92)
    _atomic(path, buf.getvalue())


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def assemble(out: Path, cache: Path, only: tuple[str, ...] | None = None, log=print) -> dict:
    """Write the image set into ``out``; returns {file name: provenance}."""
    out.mkdir(parents=True, exist_ok=True)
    sources = {"skimage": _skimage, "sklearn": _sklearn}
    sources.update({p: (lambda p=p: _debian(p, cache, out)) for p in DEBIAN})
    chosen = [s for s in sources if only is None or s in only]
    unknown = set(only or ()) - set(sources)
    if unknown:
        raise SystemExit(f"unknown sources {sorted(unknown)}: choose from {', '.join(sources)}")
    record: dict[str, dict] = {}
    for source in chosen:
        before = len(record)
        try:
            for name, img, info in sources[source]():
                file = f"{source}-{name}.jpg"
                if not (out / file).exists():
                    _save(img, out / file)
                record[file] = {"source": source, **info}
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            log(f"{source}: skipped ({e})")
            continue
        log(f"{source}: {len(record) - before} images")
    _write_sources(out, record)
    return record


def _write_sources(out: Path, record: dict) -> None:
    _atomic(out / "sources.json", (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    counts: dict[str, int] = {}
    for info in record.values():
        counts[info["package"]] = counts.get(info["package"], 0) + 1
    lines = ["# Sources of these images", "",
             "Made by `python reproductions/imageset.py` (rflens). Each image is RGB JPEG, shorter side "
             f"{SIDE} px; `sources.json` gives every file's origin and licence.", "",
             "| package | images | licence |", "|---|---|---|"]
    licences = {}
    for info in record.values():
        licences.setdefault(info["package"], info["licence"])
    lines += [f"| {p} | {n} | {licences[p]} |" for p, n in sorted(counts.items())]
    lines += ["", f"{len(record)} images in all."]
    _atomic(out / "SOURCES.md", ("\n".join(lines) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("data/images"))
    ap.add_argument("--cache", type=Path, default=Path("data/cache"),
                    help="where the Debian packages are fetched and unpacked (data/cache)")
    ap.add_argument("--only", help="comma-separated sources: skimage, sklearn, " + ", ".join(DEBIAN))
    args = ap.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",")) if args.only else None
    record = assemble(args.out, args.cache, only, log=lambda m: print(m, file=sys.stderr))
    print(f"{len(record)} images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
