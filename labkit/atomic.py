"""Atomic file writes: readers see the old file or the new one, never a torn one.

A leaf module (standard library only): runs.py (records) and secrets.py (scrubbing files
after a lab) both write files, and neither may import the other for it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

FILE_MODE = 0o644  # rw-r--r--: what the owner writes, everyone may read

def atomic_write_bytes(path: os.PathLike | str, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then rename over the target.

    rename() within one file system is atomic: readers see the old file or the new one,
    never a torn one, even if the process dies half-way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; results and portfolio pages are meant to be shared
        # (a web server, a colleague's account), so readable by all like any file cp makes.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: os.PathLike | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
