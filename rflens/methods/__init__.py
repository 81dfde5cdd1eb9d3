"""Running models for real: gradient and effective RFs, top images, empirical RFs by occlusion,
segmentations, and what they share.

``rflens`` itself exports the main calls (``top_images``, ``empirical_field``, ...); this
package also makes public the pieces a tool built on them needs: reading images, the
normalisation written as text, the checks on a scan's counts, and the folder ``rflens scan``
keeps a scan in.

>>> from rflens.methods import parse_normalize, normalize_spec
>>> parse_normalize("0.5,0.5"), normalize_spec((0.5, 0.5))
((0.5, 0.5), '0.5,0.5')
"""

from typing import TYPE_CHECKING

from .. import _lazy

if TYPE_CHECKING:
    from .distributed import RayExecutor
    from .images import Picture, image_files, load_image
    from .running import fingerprint, normalize_spec, parse_normalize
    from .scan import Scan, ScanFolder, TopImage, channel_layer, check_count, top_images

# imported on first use (rflens._lazy), as rflens itself: the CLI parses its arguments without torch
_LAZY = {
    "RayExecutor": ".distributed",
    "Picture": ".images", "image_files": ".images", "load_image": ".images",
    "fingerprint": ".running", "normalize_spec": ".running", "parse_normalize": ".running",
    "Scan": ".scan", "ScanFolder": ".scan", "TopImage": ".scan", "channel_layer": ".scan", "check_count": ".scan", "top_images": ".scan",
}


__all__ = ["RayExecutor", "Picture", "image_files", "load_image", "fingerprint", "parse_normalize", "normalize_spec", "Scan",
           "ScanFolder", "TopImage", "channel_layer", "check_count", "top_images"]

_lazy.install(__name__, _LAZY)
