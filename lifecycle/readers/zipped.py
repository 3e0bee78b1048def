"""A zip archive (Amplitude's export: one gzipped JSON-lines file per hour): every member, each
extracted in chunks to a local copy, archives and gzip streams inside it opened in turn. A member is
named ``archive.zip!folder/member`` in messages; members of no known format are passed over."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from lifecycle.readers.base import Container, Member
from lifecycle.readers.errors import reading
from lifecycle.readers.staging import copy_stream, identity, staged

__all__ = ["ZIP"]


def _hidden(member: str) -> bool:
    """macOS's resource forks and dot files, which Finder adds to the archives it makes."""
    return any(part.startswith((".", "__MACOSX")) for part in PurePosixPath(member).parts)


def _members(name: str, kind: str, local: Path) -> Iterator[Member]:
    with reading(name, "not a readable zip archive"), zipfile.ZipFile(local) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and not _hidden(i.filename)]
    for info in infos:
        member = f"{name}!{info.filename}"

        def write(dest: Path, info: zipfile.ZipInfo = info, member: str = member) -> None:
            with (
                reading(member, "cannot be extracted"),
                zipfile.ZipFile(local) as archive,
                archive.open(info) as src,
            ):
                copy_stream(src, dest)  # type: ignore[arg-type]

        yield Member(member, info.filename, staged(("unzip", *identity(local), info.filename), "", write))


ZIP = Container("zip", (".zip",), b"PK\x03\x04", _members)
