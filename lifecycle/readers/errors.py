"""The one place where a failure to read an export becomes an ``InputError`` (exit 2) naming it.

Polars, pyarrow, the OS, gzip, zip and JSON each raise their own exceptions; every reader reads
inside ``reading(name)`` so that all of them, from any container or place, are refused alike.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import pyarrow as pa

from transforms.schema import InputError

__all__ = ["READ_ERRORS", "reading", "unreadable"]

#: what reading a damaged, truncated or unreachable export raises
READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pa.ArrowException,
    OSError,  # gzip.BadGzipFile too
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
def reading(name: str, what: str = "cannot be read", hint: str | None = None) -> Iterator[None]:
    """Any read error inside is the ``InputError`` of the export ``name``; an ``InputError`` passes."""
    try:
        yield
    except InputError:
        raise
    except READ_ERRORS as exc:
        raise unreadable(exc, name, what, hint) from exc
