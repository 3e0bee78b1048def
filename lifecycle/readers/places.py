"""Where exports are: a file, a folder (every file in it, at any depth, that is an export), a glob
(expanded here, also when a shell did not), or an object store (``lifecycle.readers.cloud``)."""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from pathlib import Path

from lifecycle.readers import cloud
from transforms.schema import InputError

__all__ = ["expand"]

#: a URI of an object store, also after ``pathlib.Path`` has folded its ``//`` into ``/``
_URI = re.compile(r"^(s3|gs|gcs|az|abfs|abfss)://?(?=[^/])", re.IGNORECASE)


def expand(raw: str | Path, wanted: Callable[[str], bool], kinds: str) -> list[tuple[str, Path]]:
    """(name, local file) of every file ``raw`` names; ``wanted`` picks a folder's exports by name."""
    text = str(raw)
    uri = _URI.match(text)
    if uri:
        return cloud.objects(f"{uri.group(1).lower()}://{text[uri.end() :]}", wanted, kinds)
    path = Path(text)
    if path.is_dir():
        return _folder(path, wanted, kinds)
    if path.exists():
        return [(text, path)]
    if glob.has_magic(text):
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputError(
                "no file matches this pattern: give the export files (check the folder and the pattern)", file=text
            )
        return [f for m in matches for f in (_folder(Path(m), wanted, kinds) if Path(m).is_dir() else [(m, Path(m))])]
    raise InputError("file not found", file=text)


def _folder(path: Path, wanted: Callable[[str], bool], kinds: str) -> list[tuple[str, Path]]:
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and wanted(p.name) and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise InputError(f"the folder holds no export file ({kinds})", file=str(path))
    return [(str(p), p) for p in files]
