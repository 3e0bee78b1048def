"""Exports in object storage (``s3://bucket/prefix``, ``gs://``, ``az://``), where Segment and
Amplitude deliver them: listed and read by pyarrow's own filesystems, so credentials come as those
SDKs take them (``AWS_*`` variables, profiles, instance roles) and a URI may carry pyarrow's options
(``?endpoint_override=host:port&scheme=http`` for an S3-compatible server). Azure is ``abfs://`` or
``az://`` (with ``AZURE_STORAGE_ACCOUNT_NAME``); only S3 is tested, against moto's server. A prefix
is every object under it that is an export; each is downloaded in chunks to a local copy, then read.
An address is listed once per process, so that the checks and the analysis read the same objects.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lifecycle.readers.errors import READ_ERRORS, reading
from lifecycle.readers.staging import copy_stream, staged
from transforms.schema import InputError

__all__ = ["objects"]


def _arrow_uri(uri: str, shown: str) -> str:
    """pyarrow names Azure's ``abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH``; ``az://`` (polars'
    and fsspec's name) takes the account from ``AZURE_STORAGE_ACCOUNT_NAME``."""
    if not uri.startswith("az://"):
        return uri
    account = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account:
        raise InputError(
            "an az:// address needs the storage account: set AZURE_STORAGE_ACCOUNT_NAME, or give "
            "abfs://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH",
            file=shown,
        )
    container, _, rest = uri.removeprefix("az://").partition("/")
    return f"abfs://{container}@{account}.dfs.core.windows.net/{rest}"


#: each address's objects, listed once per process: the checks and the analysis read the same ones
_listed: dict[str, list[tuple[str, Path]]] = {}


def objects(uri: str, wanted: Callable[[str], bool], kinds: str) -> list[tuple[str, Path]]:
    if uri not in _listed:
        _listed[uri] = _objects(uri, wanted, kinds)
    return _listed[uri]


def _objects(uri: str, wanted: Callable[[str], bool], kinds: str) -> list[tuple[str, Path]]:
    # imported here: pyarrow's filesystems take a fifth of a second to import, which no command
    # reading local files should pay
    import pyarrow as pa
    import pyarrow.fs as pafs

    scheme, shown = uri.split("://", 1)[0], uri.split("?", 1)[0]
    arrow = (*READ_ERRORS, pa.ArrowException)
    with reading(shown, "cannot be listed", errors=arrow):
        fs, root = pafs.FileSystem.from_uri(_arrow_uri(uri, shown))
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            found = [info]
        else:
            listed = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
            found = sorted(
                (i for i in listed if i.type == pafs.FileType.File and wanted(i.base_name)), key=lambda i: i.path
            )
    if not found:
        raise InputError(f"no export file at this address ({kinds})", file=shown)
    out = []
    for i in found:
        name = f"{scheme}://{i.path}"

        def write(dest: Path, path: str = i.path, name: str = name) -> None:
            with reading(name, "cannot be downloaded", errors=arrow), fs.open_input_stream(path) as src:
                copy_stream(src, dest)

        out.append((name, staged(("object", name, i.size, i.mtime_ns), "", write)))
    return out
