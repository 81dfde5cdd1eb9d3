"""The images that ``empirical`` and ``segment`` measure: a scan made by ``rflens scan``
(checked against the model and the flags) or a folder scanned on the spot; the channels, and
the occluder, they are given."""

from __future__ import annotations

import re
from pathlib import Path

import rflens
from rflens import methods
from rflens.errors import RFLensError

from .common import (OCCLUDER_SEED_HELP, format_option, image_options, occluder_options, output_option, short,
                     size_for, size_text, tracker, weights_options)


def measuring_options(sp) -> None:
    """The options ``empirical`` and ``segment`` share, after their own: --format, the occluder,
    the images and the model's inputs, the weights, -o."""
    format_option(sp)
    occluder_options(sp)
    image_options(sp)
    weights_options(sp, channel=False, seed=OCCLUDER_SEED_HELP)
    output_option(sp)


class ScanInputs:
    """The scan named by ``--scan`` (checked against the model and flags) or the folder named by
    ``--images``, with the input size and normalisation to use."""

    def __init__(self, args, model, weights: str):
        self.scan = None
        self.normalize = methods.parse_normalize(args.normalize, "--normalize")
        size = rflens.parse_input_size(args.input_size) if args.input_size else None
        if getattr(args, "scan", None):
            folder = methods.ScanFolder(args.scan)
            self.scan = folder.load()
            scanned = tuple(self.scan.config.get("size", ()))
            if size is not None and scanned and size != scanned:
                raise RFLensError(f"--input-size {args.input_size}: the scan in '{args.scan}' was made at "
                                  f"{size_text(scanned)}")
            size = scanned or size or size_for(args.model, args)
            if folder.settings() is not None:
                if args.normalize is None:
                    self.normalize = folder.normalize
                elif self.normalize != folder.normalize:
                    raise RFLensError(f"--normalize {args.normalize}: the scan in '{args.scan}' was made with "
                                      f"--normalize {methods.normalize_spec(folder.normalize)}")
            folder.check_model(self.scan, model, weights, args.model)
            if self.scan.layer != args.layer:
                methods.channel_layer(model, args.layer, size)  # an unknown name fails with close matches first
                raise RFLensError(f"the scan in '{args.scan}' is of layer '{self.scan.layer}', not '{args.layer}'")
        self.size = size or size_for(args.model, args)
        self.images = getattr(args, "images", None)

    def k(self, top_k: int | None) -> int:
        """Top images per channel: --top-k, at most what the scan kept (its all by default)."""
        if self.scan is None:
            return top_k or 10
        if top_k is not None and top_k > self.scan.k:
            raise RFLensError(f"--top-k {top_k}: the scan kept {self.scan.k} images per channel; use at most "
                              f"{self.scan.k}, or scan again with --top-k {top_k}")
        return top_k or self.scan.k

    def files(self) -> list[Path]:
        """The scanned files, for the library calls that look images up by position."""
        return [Path(n) for n in self.scan.names]

    def scan_for(self, args, model, k: int, device, bars, executor=None):
        """The given scan, or a scan of ``--images`` made now (kept in memory; on Ray with
        ``executor``)."""
        if self.scan is not None:
            return self.scan
        return rflens.top_images(model, args.layer, args.images, k, input_size=self.size,
                                 normalize=self.normalize, batch_size=16, device=device, executor=executor,
                                 progress=tracker(bars, f"scanning {short(args.model)} {args.layer}"))


def parse_channels(text: str | None, layer, flag: str) -> list[int]:
    """``0-15``, ``0,3,7`` or a mix; None: the first 16 channels (all of a layer is often
    hundreds, each with k images of occluded forwards)."""
    channels = layer.output_shape[1]
    if text is None:
        return list(range(min(16, channels)))
    chosen: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if re.fullmatch(r"\d+\s*-\s*\d+", part):
                a, b = (int(v) for v in part.split("-"))
                if b < a:
                    raise ValueError
                chosen += range(a, b + 1)
            else:
                chosen.append(int(part))
        except ValueError:
            raise RFLensError(f"{flag} {text!r}: use channel numbers such as 0-15 or 0,3,7") from None
    bad = [c for c in chosen if not 0 <= c < channels]
    if bad:
        raise RFLensError(f"{flag} {text}: channel {bad[0]} is outside layer '{layer.name}', which has {channels} "
                          f"channels (0..{channels - 1})")
    return list(dict.fromkeys(chosen))


def occluder(args, size):
    """The occluder the flags describe, refused now if it does not fit the input."""
    made = rflens.Occluder(args.occluder, args.stride, args.fill, args.seed)
    made.grid(tuple(size[1:]))  # too big for the input: fails before the long job
    return made
