"""Local copies of what cannot be read in place: a gzip's decompressed stream, a zip's member, a
cloud object, a JSON document's records as JSON lines.

Each is written once per process, streamed in chunks (memory stays bounded whatever the size), into a
temporary folder removed at exit; polars then scans it lazily like any file. A copy is keyed by its
source's identity (path, size, modification time), so the checks and the analysis share it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import BinaryIO

__all__ = ["CHUNK", "copy_stream", "identity", "staged"]

#: bytes copied at a time
CHUNK = 1 << 20

_lock = threading.Lock()
_copies: dict[Hashable, Path] = {}
_root: list[Path] = []


def _folder() -> Path:
    if not _root:
        root = Path(tempfile.mkdtemp(prefix="frigade-migrate-read-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _root.append(root)
    return _root[0]


def identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def staged(key: Hashable, suffix: str, write: Callable[[Path], None]) -> Path:
    """The local copy for ``key``, written by ``write(path)`` the first time it is asked for."""
    with _lock:
        found = _copies.get(key)
        if found is not None and found.exists():
            return found
        dest = _folder() / f"{len(_copies)}{suffix}"
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            write(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, dest)
        _copies[key] = dest
        return dest


def copy_stream(source: BinaryIO, dest: Path) -> None:
    with dest.open("wb") as out:
        shutil.copyfileobj(source, out, CHUNK)
