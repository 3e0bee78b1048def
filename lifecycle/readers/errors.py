"""The one place where a failure to read an export becomes an ``InputError`` (exit 2) naming it.

Polars, the OS, gzip, zip and JSON each raise their own exceptions (and pyarrow's, which only
``lifecycle.readers.cloud`` imports, when it needs them); every reader reads
inside ``reading(name)`` so that all of them, from any container or place, are refused alike.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl

from transforms.schema import InputError

__all__ = ["READ_ERRORS", "reading", "unreadable"]

#: what reading a damaged, truncated or unreachable export raises
READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    OSError,  # gzip.BadGzipFile, and pyarrow's filesystems' errors, too
    EOFError,  # a truncated gzip
    zipfile.BadZipFile,
    zlib.error,
    UnicodeDecodeError,
    json.JSONDecodeError,
)


def unreadable(exc: BaseException, name: str, what: str = "cannot be read", hint: str | None = None) -> InputError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"{what}: {reason}", file=name, hint=hint)


@contextmanager
def reading(
    name: str, what: str = "cannot be read", hint: str | None = None, errors: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Any read error inside (``READ_ERRORS``, else ``errors``) is the ``InputError`` of the export
    ``name``; an ``InputError`` passes."""
    caught = errors or READ_ERRORS
    try:
        yield
    except InputError:
        raise
    except caught as exc:
        raise unreadable(exc, name, what, hint) from exc
