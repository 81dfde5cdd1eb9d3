"""Writing result files: whole or not at all, and refused before the work where they cannot be."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import RFLensError


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place,
    so an interrupted or failed write leaves no half-written file.  A file the system refuses
    (no such folder, no permission, a read-only or full disk) is an ``RFLensError`` saying why."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix + ".part")
    except OSError as e:
        check_writable(path)  # says why: a missing folder, a file in the way, no permission
        raise RFLensError(f"cannot write '{path}': {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary open() would have made it
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise RFLensError(f"cannot write '{path}': {e.strerror or e}") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | Path) -> Path:
    """Refuse now, saying why, a file ``atomic_write`` could not write later, so that a long
    computation does not end in a failed write: a folder in its place, a missing folder, a file
    where its folder should be, a folder where no file can be made.  The last is probed by
    making (and removing) an empty file there, so a read-only disk or a root-only folder is
    caught whoever runs it (``os.access`` says yes to root everywhere).

    >>> check_writable("/nonexistent-folder/rf.png")
    Traceback (most recent call last):
    ...
    rflens.errors.RFLensError: cannot write '/nonexistent-folder/rf.png': folder '/nonexistent-folder' does not exist
    """
    path = Path(path)
    where = f"cannot write '{path}'"
    try:
        if path.is_dir():
            raise RFLensError(f"{where}: it is a folder; give a file name")
    except OSError as e:
        raise RFLensError(f"{where}: {e.strerror or e}") from None
    writable_folder(path.parent, where)
    return path


def writable_folder(folder: str | Path, where: str) -> None:
    """Refuse a ``folder`` that does not exist, is a file, or takes no new file, the message
    starting with ``where`` (what could not be done)."""
    folder = Path(folder)
    shown = "the current folder" if str(folder) == "." else f"folder '{folder}'"
    try:
        if not folder.exists():
            raise RFLensError(f"{where}: {shown} does not exist")
        if not folder.is_dir():
            raise RFLensError(f"{where}: '{folder}' is a file, not a folder")
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rflens-", suffix=".part")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RFLensError(f"{where}: no file can be made in {shown} ({e.strerror or e}); choose another "
                          "folder") from None
