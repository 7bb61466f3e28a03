"""Where built models live, and how a build appears there atomically.

Cache layout: `<cache root>/models/<name>-<key>/` where `key` is a short hash of
everything that determines the bytes (config, seed, corpus digest, builder version). A
different config gets a different directory, so a cache entry is never stale.

Atomic build: we build into a hidden temporary directory next to the target and `rename`
it into place at the end. On POSIX, renaming a directory within one filesystem is atomic,
and it fails if the target already holds files. So:
- a crash (or Ctrl-C) leaves only a `.tmp-` directory, never a half-built model;
- two builders racing for the same key both build, the first rename wins, the second
  sees the target exists, throws its copy away and uses the winner's.
Every finished build carries a marker file; we only ever delete directories that carry it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

MARKER = "labkit_build.json"  # written last inside the temp dir; proves a build finished


def cache_root() -> Path:
    """`$LABKIT_CACHE_DIR`, else `<project>/.cache` in a source checkout, else ~/.cache/labkit."""
    env = os.environ.get("LABKIT_CACHE_DIR")
    if env:
        return Path(env).expanduser().resolve()
    project = Path(__file__).resolve().parents[2]  # labkit/models/cache.py -> project root
    if (project / "pyproject.toml").is_file():
        return project / ".cache"
    return Path.home() / ".cache" / "labkit"


def cache_key(spec: dict) -> str:
    """Short, stable hash of a JSON-able dict (sorted keys, so dict order does not matter)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def read_marker(path: Path) -> dict | None:
    """The build record of a finished build directory, or None if it is not one."""
    try:
        return json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def write_marker(path: Path, record: dict) -> None:
    """Write the build record; call it last, after every other file is complete."""
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    (Path(path) / MARKER).write_text(text, encoding="utf-8")


def make_temp_dir(target: Path) -> Path:
    """A fresh hidden directory beside `target` (same filesystem, so rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_temps(target)
    prefix = f".{target.name}.tmp-{socket.gethostname()}-{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))


def _open_permissions(tmp: Path) -> None:
    """mkdtemp (and safetensors) create owner-only files; give them the usual umask modes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    for f in tmp.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def publish(tmp: Path, target: Path, replace: bool = False) -> bool:
    """Move the finished build `tmp` to `target`. Returns False if another builder won.

    With replace=True an existing finished build is swapped out first (moved aside, then
    deleted), so readers see either the old or the new directory, never a mix.
    """
    _open_permissions(tmp)
    if replace and target.exists():
        if read_marker(target) is None and any(target.iterdir()):
            raise RuntimeError(f"refusing to replace {target}: it is not a labkit build")
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(target, aside)
        except FileNotFoundError:
            aside = None  # someone else removed it meanwhile; fine
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(tmp, target)  # atomic; an empty existing target is replaced
        return True
    except OSError:
        if read_marker(target) is None:
            raise  # not a racing builder: something unexpected sits at target
        shutil.rmtree(tmp, ignore_errors=True)
        return False


def _remove_abandoned_temps(target: Path) -> None:
    """Delete temp dirs of earlier builds on this host whose process no longer exists."""
    host = socket.gethostname()
    for d in target.parent.glob(f".{target.name}.tmp-{host}-*"):
        try:
            pid = int(d.name[len(f".{target.name}.tmp-{host}-"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
