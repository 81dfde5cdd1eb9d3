"""Writing result files: whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import RFLensError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place,
    so an interrupted or failed write leaves no half-written file."""
    path = Path(path)
    if not path.parent.exists():
        raise RFLensError(f"cannot write '{path}': folder '{path.parent}' does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix + ".part")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary open() would have made it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
